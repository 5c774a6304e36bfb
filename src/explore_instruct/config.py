"""The run config: pydantic models of the YAML file, with the paper's defaults.

Paper settings: max depth K = 2, breadth B = [8, 6], task-pruning and diversity-filter threshold 0.7,
10,000 sampled examples. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explore_instruct.datafile import read_text_file
from explore_instruct.errors import UserError
from explore_instruct.llm.base import StructuredSetting
from explore_instruct.text import refuse_invalid

PROFILES = ("rewriting", "brainstorming", "math", "generic")


class Strict(BaseModel):
    # strict: `true` is not an integer and "3" is not a number; YAML already gives every value its type.
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


Name = Annotated[str, AfterValidator(_not_blank)]


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and a valid port, and no credentials in it.

    `user:password@` or a query (`?token=...`) would be written into the run's config.yaml, so they
    are refused: the key belongs in an environment variable named by `llm.api_key_env`.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number in 0-65535)
    except ValueError:
        raise ValueError("is not a valid URL (check the port: a number from 1 to 65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(
            "must not carry credentials (user:password@, ?token=...): put the key in an environment "
            "variable and name that variable in llm.api_key_env"
        )
    return url.strip()


class SeedExample(Strict):
    instruction: Name = Field(min_length=1)
    input: str = ""
    output: str = ""


class RootTask(Strict):
    name: Name = Field(min_length=1)
    description: str = ""
    examples: list[SeedExample] = Field(default_factory=list)


def per_depth(values: list[int], depth: int) -> int:
    """The value for `depth` from a per-depth list; depths past its end reuse the last value."""
    return values[min(depth, len(values) - 1)]


class ExploreConfig(Strict):
    max_depth: int = Field(2, ge=0, le=6, description="K: how deep the tree grows (0 = no exploration)")
    breadth: list[int] = Field(default_factory=lambda: [8, 6], min_length=1)
    new_per_call: int = Field(5, ge=1, le=20, description="M: new subtasks asked for per lookahead call")
    examples_per_subtask: int = Field(2, ge=1, le=10)
    demonstrations: int = Field(2, ge=0, le=10, description="node examples shown in each exploration prompt")
    max_fruitless_rounds: int = Field(3, ge=1, le=20)

    @field_validator("breadth")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("every breadth must be at least 1")
        return v


# Far above the paper's 300; a typo such as 1e12 would otherwise exhaust memory planning the calls.
MAX_EXAMPLES_PER_TASK = 100_000


class GenerateConfig(Strict):
    examples_per_task: list[int] = Field(default_factory=lambda: [100], min_length=1)
    per_call: int = Field(10, ge=1, le=50)
    demonstrations: int = Field(2, ge=0, le=10)
    max_extra_calls: int = Field(3, ge=0, le=1000, description="top-up calls when a task falls short")
    bootstrap: bool = Field(False, description="draw demonstrations from the growing pool (self-instruct)")

    @field_validator("examples_per_task")
    @classmethod
    def _non_negative(cls, v: list[int]) -> list[int]:
        if any(n < 0 for n in v):
            raise ValueError("examples per task cannot be negative")
        if any(n > MAX_EXAMPLES_PER_TASK for n in v):  # enrichment plans every call of a task at once
            raise ValueError(f"examples per task cannot exceed {MAX_EXAMPLES_PER_TASK:,}")
        return v


class PruneConfig(Strict):
    enabled: bool = True
    threshold: float = Field(0.7, ge=0.0, le=1.0)


class SemanticFilterConfig(Strict):
    """The semantic near-duplicate filter (stage `semantic`): cosine similarity of the `embeddings`."""

    enabled: bool = False
    threshold: float = Field(0.9, ge=-1.0, le=1.0, description="drop when cosine similarity exceeds this")
    scope: Literal["node", "global"] = "global"
    search: Literal["auto", "exact", "index"] = Field(
        "auto", description="exact matrix products, an approximate index (usearch), or the index past the crossover"
    )


class FilterConfig(Strict):
    enabled: bool = True
    threshold: float = Field(0.7, ge=0.0, le=1.0)
    scope: Literal["node", "global"] = "global"
    tokenizer: Literal["rouge", "unicode", "cjk"] = "rouge"
    stem: bool = False
    against_seeds: bool = Field(True, description="seed instructions count as already kept (self-instruct)")
    semantic: SemanticFilterConfig = Field(default_factory=SemanticFilterConfig)


class SampleConfig(Strict):
    size: int = Field(10_000, ge=1)
    max_depth: int | None = Field(None, ge=0)
    skip_pruned: bool = True
    seed: int | None = None
    # score: within each task take the highest-rated examples first (needs the rate stage; ties by tree position)
    order: Literal["random", "score"] = "random"


# The OpenAI Batch API's limits per batch: requests, and bytes of the input file (its "200 MB").
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000


class BatchConfig(Strict):
    """Enrichment calls sent as batches: the OpenAI Batch API, or JSONL files for `vllm run-batch`."""

    enabled: bool = False
    provider: Literal["openai", "files"] = "openai"
    poll_interval: float = Field(30.0, gt=0, description="seconds between status checks of a submitted batch")
    retry: Literal["batch", "online"] = Field("batch", description="where failed lines go: a new batch, or online")
    top_ups: Literal["batch", "online"] = Field("batch", description="where a task's top-up calls go")
    max_requests: int = Field(BATCH_MAX_REQUESTS, ge=1, le=BATCH_MAX_REQUESTS)
    max_bytes: int = Field(BATCH_MAX_BYTES, ge=1024, le=BATCH_MAX_BYTES)


# What every place that takes the name of a key's environment variable says when given something else.
ENV_NAME_RULE = "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# How providers' keys begin; no variable name a user picks does (names are upper case by convention).
_KEY_PREFIXES = ("sk-", "sk_live_", "sk_test_", "hf_", "ghp_", "github_pat_", "gsk_", "AIza")


def looks_like_key(value: str) -> bool:
    """True when `value` cannot be a variable's name and is probably a key pasted by mistake.

    A key may never be repeated in a message, so whoever checks this says `ENV_NAME_RULE`, not the value.
    """
    if not _ENV_NAME.fullmatch(value) or value.startswith(_KEY_PREFIXES):
        return True
    # A long run of mixed case and digits is a token, not a name like OPENAI_API_KEY.
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return len(value) >= 32 and mixed


def _check_env_name(v: str | None) -> str | None:
    # A key pasted here by mistake would end up in config.yaml: refuse anything not env-name-like.
    if v is not None and looks_like_key(v):
        raise ValueError(ENV_NAME_RULE)
    return v


class EndpointConfig(Strict):
    """One server of a pool that serves `llm.model` (e.g. one vLLM replica)."""

    base_url: Annotated[str, AfterValidator(check_base_url)]
    api_key_env: Annotated[str | None, AfterValidator(_check_env_name)] = None
    max_concurrency: int = Field(8, ge=1, le=512, description="calls in flight at this endpoint")
    weight: float = Field(1.0, gt=0.0, le=100.0, description="share of traffic relative to the others")
    model: Name | None = Field(None, description="optional; must equal llm.model when given")


class PricingConfig(Strict):
    """Prices in the config's currency per million tokens (what the dry run and the budget use)."""

    input_per_mtok: float = Field(0.0, ge=0.0)
    output_per_mtok: float = Field(0.0, ge=0.0)
    batch_discount: float = Field(0.5, ge=0.0, le=1.0, description="fraction of the price a batch API takes off")


class BudgetConfig(Strict):
    """A hard cap: no call starts once its worst case could cross it."""

    max_cost: float | None = Field(None, gt=0.0)
    max_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetConfig:
        if (self.max_cost is None) == (self.max_tokens is None):
            raise ValueError("give exactly one of 'max_cost' or 'max_tokens'")
        return self


class ModelEndpoint(Strict):
    """Which model answers and where: the fields `llm` and `embeddings` share, validated once."""

    backend: Literal["local", "openai"] = Field("local", description="LLM backend: local | openai.")
    base_url: Annotated[str, AfterValidator(check_base_url)] | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."
    )
    model: Name | None = Field(None, description="Model name at the endpoint.")
    model_path: Name | None = Field(None, description="GGUF file for the local backend")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return _check_env_name(v)

    @model_validator(mode="after")
    def _openai_needs_model(self) -> ModelEndpoint:
        if self.backend == "openai" and not self.model:
            raise ValueError("backend 'openai' needs 'model'")
        return self


class EmbeddingsConfig(ModelEndpoint):
    """The embedding model (semantic filter, diversity measures). `local` embeds with the bundled GGUF
    (or `model_path`); `openai` sends `/v1/embeddings` to `base_url`. Retries and timeout are `llm`'s."""

    max_concurrency: int = Field(4, ge=1, le=512, description="embedding requests in flight")
    batch_size: int = Field(64, ge=1, le=2048, description="texts per embedding request")


# The `llm` settings a command without a run config (`answer`, `judge`) takes as options.
ENDPOINT_SETTINGS: tuple[str, ...] = ("base_url", "timeout", "max_concurrency", "retries")


class LLMConfig(ModelEndpoint):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(2048, ge=16, le=1_000_000, description="Most tokens per reply.")
    max_concurrency: int = Field(8, ge=1, le=512, description="Requests in flight.")
    timeout: float = Field(120.0, gt=0, le=86_400, description="Seconds per request.")
    retries: int = Field(4, ge=0, le=20, description="Retries per request (errors and unparseable replies).")
    structured_output: StructuredSetting = "auto"
    batch: BatchConfig = Field(default_factory=BatchConfig)
    endpoints: list[EndpointConfig] | None = Field(None, description="several servers of llm.model (openai backend)")
    pricing: PricingConfig | None = None
    budget: BudgetConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _pool_concurrency(cls, data: Any) -> Any:
        # With endpoints, calls in flight default to the sum of their limits; a max_concurrency given
        # explicitly caps it. Resolved here so the run's config.yaml records the number used.
        if isinstance(data, dict) and "max_concurrency" not in data and isinstance(data.get("endpoints"), list):
            limits = [e.get("max_concurrency", 8) if isinstance(e, dict) else 8 for e in data["endpoints"]]
            if limits and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in limits):
                data = {**data, "max_concurrency": min(sum(limits), 512)}
        return data

    @model_validator(mode="after")
    def _batch_needs_openai(self) -> LLMConfig:
        if self.batch.enabled and self.backend != "openai":
            raise ValueError("batch mode needs backend 'openai' (the model name goes into every batch line)")
        return self

    @model_validator(mode="after")
    def _endpoints_consistent(self) -> LLMConfig:
        if self.endpoints is None:
            return self
        if self.backend != "openai":
            raise ValueError("'endpoints' needs backend 'openai'")
        if self.base_url is not None:
            raise ValueError("give either 'base_url' or 'endpoints', not both")
        if not self.endpoints:
            raise ValueError("'endpoints' is empty: list at least one {base_url: ...}")
        if self.batch.enabled:
            raise ValueError("batch mode submits to one server: use 'base_url' with 'batch', not 'endpoints'")
        others = sorted({e.model for e in self.endpoints if e.model is not None and e.model != self.model})
        if others:
            raise ValueError(f"every endpoint must serve llm.model {self.model!r}, not {', '.join(map(repr, others))}")
        seen: set[str] = set()
        for i, e in enumerate(self.endpoints):
            url = e.base_url.rstrip("/").lower()
            if url in seen:
                raise ValueError(f"endpoints[{i}] repeats a base_url listed before it")
            seen.add(url)
        return self

    @model_validator(mode="after")
    def _budget_has_prices(self) -> LLMConfig:
        if self.budget is not None and self.budget.max_cost is not None and self.pricing is None:
            raise ValueError("budget.max_cost needs 'pricing' (input_per_mtok, output_per_mtok)")
        return self

    def total_concurrency(self) -> int:
        """Calls in flight: the endpoints' limits added up, unless llm.max_concurrency is lower."""
        if not self.endpoints:
            return self.max_concurrency
        return min(sum(e.max_concurrency for e in self.endpoints), self.max_concurrency)


# A licence or language identifier as the Hub's card metadata spells it: lower case, digits, '.', '-'.
_HUB_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def check_hub_id(value: str) -> str:
    if not value or not set(value) <= _HUB_ID_CHARS:
        raise ValueError(f"{value!r} is not an identifier the Hub reads (lower case, e.g. apache-2.0, cc-by-4.0, en)")
    return value


HubId = Annotated[str, AfterValidator(check_hub_id)]


class PublishConfig(Strict):
    """What the dataset card says about rights and language (`export --format hf`, `push`)."""

    license: HubId | None = Field(None, description="the data's licence (a Hub licence id); unknown when not given")
    language: list[HubId] = Field(default_factory=lambda: ["en"], min_length=1)


# --- quality control after the diversity filter (decontaminate, rate) ---------------------------------------


class DecontaminateConfig(Strict):
    """Drop examples that share a word n-gram with an evaluation question or its reference answer."""

    against: list[Name] = Field(default_factory=list, description="question files; none: the stage does nothing")
    ngram: int = Field(13, ge=1, le=100)


class RateConfig(Strict):
    """An LLM judge scores each kept example from 1 to 10; below `threshold` it is dropped."""

    enabled: bool = False
    threshold: int = Field(5, ge=1, le=10)
    llm: LLMConfig | None = Field(None, description="the judge's endpoint and model; omitted: the run's llm")

    def judge(self, run_llm: LLMConfig) -> LLMConfig:
        """The `llm` settings the rating calls use."""
        return self.llm if self.llm is not None else run_llm


class RunConfig(Strict):
    domain: Literal["rewriting", "brainstorming", "math", "generic"] = "generic"
    seed: int = 0
    root: RootTask | None = None
    seed_tree: Name | None = Field(None, description="a tree in the release's directory format to start from")
    explore: ExploreConfig = Field(default_factory=ExploreConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    rate: RateConfig = Field(default_factory=RateConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)

    @model_validator(mode="after")
    def _one_start(self) -> RunConfig:
        if (self.root is None) == (self.seed_tree is None):
            raise ValueError("give exactly one of 'root' (name, description, examples) or 'seed_tree'")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override {dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`section.field=value` with a YAML value (so `breadth=[4,3]` and `enabled=false` work)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected section.field=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        return key.strip(), raw


def _location(exc: ValidationError, overrides: dict[str, Any]) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    # A bad value given on the command line is not the file's fault: say where it came from.
    given = next((k for k in overrides if loc == k or loc.startswith(k + ".") or k.startswith(loc + ".")), None)
    came_from = f" (the value given on the command line for {given})" if given else ""
    return f"{loc}: {err['msg']}{came_from}"


def build_config(data: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Validate `data` with `overrides` applied; an override's None (`--set x=null` or `~`) sets the field to null."""
    data = copy.deepcopy(data)  # overrides write into nested sections: never into the caller's dicts
    for key, value in (overrides or {}).items():
        # Bytes on the command line that are not UTF-8 arrive as lone surrogates (surrogateescape).
        refuse_invalid(value, f"{key} (given on the command line)")
        _set_dotted(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {_location(exc, overrides or {})}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(p: Path, what: str = "a YAML config file", top: str = "config sections") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (duplicate keys refused); any problem is one UserError."""
    text = read_text_file(p, what)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except RecursionError:
        raise UserError(f"{p}: YAML nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        where = f" (line {mark.line + 1})" if mark else ""
        detail = f": {' '.join(str(problem).split())}" if problem else ""
        raise UserError(f"{p}: not valid YAML{where}{detail}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of {top} at the top level")
    refuse_invalid(data, str(p))  # YAML's "\\udcff" escape decodes to a lone surrogate
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML run config; any problem is one UserError naming file and field."""
    p = Path(path)
    config = build_config(read_yaml_mapping(p), str(p), overrides)
    if config.seed_tree is not None:
        # Relative to the config file, so configs travel with their trees (an absolute path stays itself).
        seed_tree = (p.parent / config.seed_tree).resolve()
        if not (seed_tree / "tree_meta_info.json").is_file():
            raise UserError(f"{p}: seed_tree: {seed_tree} has no tree_meta_info.json")
        config.seed_tree = str(seed_tree)
    # Question files too are relative to the config file.
    against = [(p.parent / f).resolve() for f in config.decontaminate.against]
    for i, f in enumerate(against):
        if not f.is_file():
            raise UserError(f"{p}: decontaminate.against[{i}]: {f} is not a file")
    config.decontaminate.against = [str(f) for f in against]
    return config


def load_llm_config(path: str | Path) -> LLMConfig:
    """Only the `llm` section of a config file (commands such as `judge` need nothing else)."""
    p = Path(path)
    section = read_yaml_mapping(p).get("llm")
    if not isinstance(section, dict):
        raise UserError(f"{p}: no 'llm' section")
    try:
        return LLMConfig.model_validate(section)
    except ValidationError as exc:
        raise UserError(f"{p}: llm.{_location(exc, {})}") from None
