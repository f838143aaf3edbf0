"""Rebuild the bundled demo sample (cllmfs_hf/resources/demo/crossner_politics) from CrossNER politics.

    python examples/make_demo_sample.py --source ../shared/data/crossner/politics

The support set is a greedy 5-shot sample of the train split (seed 42); the test slice is a fixed random
sample of 50 sentences of the test split (seed 0). CrossNER is MIT-licensed; its license and attribution are
copied beside the sample.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from cllmfs_hf.data.readers import read_dataset
from cllmfs_hf.data.sampling import greedy_kshot
from cllmfs_hf.data.types import AnnotatedSentence
from cllmfs_hf.training import DEMO_DATA_DIR


def write_bio(sentences: list[AnnotatedSentence], path: Path) -> None:
    """Token TAB IOB2-tag lines, a blank line after each sentence (the CrossNER format)."""
    with path.open("w", encoding="utf-8") as handle:
        for s in sentences:
            for token, tag in zip(s.tokens, s.to_bio()):
                handle.write(f"{token}\t{tag}\n")
            handle.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=Path("../shared/data/crossner/politics"))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--test_size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=DEMO_DATA_DIR)
    args = parser.parse_args()

    support = greedy_kshot(read_dataset(args.source / "train.txt"), args.k, seed=42)
    test = read_dataset(args.source / "test.txt")
    test = [test[i] for i in sorted(random.Random(0).sample(range(len(test)), args.test_size))]
    args.out.mkdir(parents=True, exist_ok=True)
    write_bio(support, args.out / "support.txt")
    write_bio(test, args.out / "test.txt")
    license_file = args.source.parent / "LICENSE.CrossNER-MIT"
    if license_file.is_file():
        shutil.copy(license_file, args.out / "LICENSE")
    print(
        f"support: {len(support)} sentences, {sum(len(s.mentions) for s in support)} mentions; "
        f"test: {len(test)} sentences, {sum(len(s.mentions) for s in test)} mentions -> {args.out}"
    )


if __name__ == "__main__":
    main()
