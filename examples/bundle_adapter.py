"""Make a trained adapter shippable: a compact copy (bf16 weights, its card and licence) under a bundled name.

    python examples/bundle_adapter.py --source outputs/general_ner/adapter --name general-ner \\
        --license_file examples/recipes/general_ner.LICENSE --license apache-2.0 \\
        --card_note_file examples/recipes/general_ner.card.md

writes cllmfs_hf/resources/adapters/<name> (replaced atomically), which ``NERExtractor.from_pretrained(name)``
and ``examples/train.py --init_adapter <name>`` then load offline. ``--target`` writes elsewhere instead (a
folder to push to the Hub, for instance).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from cllmfs_hf.bundled import BUNDLED_ADAPTERS, BUNDLED_DIR
from cllmfs_hf.compact import compact_adapter_copy


@dataclass
class BundleArguments:
    source: str = field(
        metadata={"help": "The trained adapter folder (an examples/train.py <output_dir>/adapter)."}
    )
    name: str = field(
        default="general-ner",
        metadata={
            "help": f"The bundled name (one of {sorted(BUNDLED_ADAPTERS)}); the folder under {BUNDLED_DIR}."
        },
    )
    target: str | None = field(
        default=None, metadata={"help": "Write the copy here instead of the package's resources folder."}
    )
    license_file: str | None = field(
        default=None,
        metadata={"help": "Text file copied as the folder's LICENSE (with the data's attributions)."},
    )
    license: str | None = field(
        default=None, metadata={"help": "SPDX-style licence id for the card's metadata, e.g. apache-2.0."}
    )
    card_note_file: str | None = field(
        default=None,
        metadata={"help": "Markdown appended to the model card (what the adapter saw and did not)."},
    )
    dtype: str = field(default="bfloat16", metadata={"help": "dtype of the copied weights."})

    def __post_init__(self) -> None:
        if self.target is None and self.name not in BUNDLED_ADAPTERS:
            raise ValueError(
                f"--name {self.name!r} is not a bundled name ({sorted(BUNDLED_ADAPTERS)}): add it to "
                "cllmfs_hf.bundled.BUNDLED_ADAPTERS first, or pass --target."
            )
        for flag in ("license_file", "card_note_file"):
            value = getattr(self, flag)
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(f"--{flag} {value!r} does not exist: pass an existing text file.")


def main(args: BundleArguments) -> Path:
    def read(path: str | None) -> str | None:
        return Path(path).read_text(encoding="utf-8") if path else None

    target = compact_adapter_copy(
        args.source,
        args.target or BUNDLED_DIR / args.name,
        dtype=args.dtype,
        license_text=read(args.license_file),
        license_id=args.license,
        card_note=read(args.card_note_file),
    )
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"wrote {target} ({size:.1f} MiB)")
    return target


if __name__ == "__main__":
    (bundle_args,) = HfArgumentParser(BundleArguments).parse_args_into_dataclasses(sys.argv[1:])
    main(bundle_args)
