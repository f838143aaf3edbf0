"""Gold-mention statistics behind the span constraint's default limits (SpanConstraintConfig).

For each dev split (never a test split): mentions, the longest mention in words, the share of mentions longer
than 8 and 12 words, the most mentions of one type in one sentence, and the largest ratio of that count to the
sentence's tokens (the evidence for ``max_spans_per_word=0.5``).

    python benchmarks/span_statistics.py --output outputs/span_statistics.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DEV_SPLITS = [
    "crossner/politics/dev.txt",
    "crossner/science/dev.txt",
    "wikigold/wikigold.conll.txt",
    "wnut17/emerging.dev.conll",
    "bio/NCBI-disease-IOB/devel.tsv",
    "fewnerd/inter/dev.txt",
]


@dataclass
class SpanStatisticsArguments:
    output: str = field(metadata={"help": "Where to write the JSON results."})
    data_dir: str = field(default=str(SHARED), metadata={"help": "The shared data folder."})


def statistics(path: Path) -> dict:
    from cllmfs_hf.data.readers import read_dataset

    sentences = read_dataset(path)
    words: Counter[int] = Counter()
    most, ratio = 0, 0.0
    for s in sentences:
        per_type = Counter(m.label for m in s.mentions)
        for m in s.mentions:
            words[len(s.text[m.start : m.end].split())] += 1
        if per_type:
            top = max(per_type.values())
            most, ratio = max(most, top), max(ratio, top / max(1, len(s.tokens)))
    total = sum(words.values())
    longer = lambda k: round(sum(v for w, v in words.items() if w > k) / total, 5) if total else 0.0  # noqa: E731
    return {
        "sentences": len(sentences),
        "mentions": total,
        "longest_mention_words": max(words, default=0),
        "share_longer_than_8_words": longer(8),
        "share_longer_than_12_words": longer(12),
        "most_mentions_of_one_type_in_a_sentence": most,
        "largest_mentions_per_token_ratio": round(ratio, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(SpanStatisticsArguments).parse_args_into_dataclasses(args=argv)
    results = {name: statistics(Path(args.data_dir) / name) for name in DEV_SPLITS}
    for name, row in results.items():
        print(f"{name:<34} {json.dumps(row)}")
    print("largest ratio over all:", max(r["largest_mentions_per_token_ratio"] for r in results.values()))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
