"""Answering: question/answer file validation, endpoint answers through the client (cache, retries,
truncation), left-padded batched generation, and the answer command's errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.evaluate.answer import SamplingSettings
from explore_instruct.evaluate.questions import Answer, match_answers, read_answers, read_questions
from explore_instruct.evaluate.stages import EndpointSettings, answer_file
from explore_instruct.llm.base import Completion, CompletionRequest, TransientLLMError, Usage
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.train.prompting import question_prompt


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def questions(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "q.jsonl",
        [
            {"question_id": "a1", "question": "Name a colour.", "std_answer": "", "class": "brainstorming"},
            {"question_id": "a2", "question": "Rewrite: he go home.", "std_answer": "", "class": "rewrite"},
            {"question_id": 3, "question": "Say hi.", "std_answer": "", "class": "rewrite"},
        ],
    )


# --- files -------------------------------------------------------------------------------------


def test_question_files_are_validated(tmp_path: Path, questions: Path) -> None:
    qs = read_questions(questions)
    assert [q.question_id for q in qs] == ["a1", "a2", "3"]  # numeric ids compare as text
    dup = _write(tmp_path / "dup.jsonl", [{"question_id": "x", "question": "?"}] * 2)
    with pytest.raises(UserError, match="duplicate question_id x"):
        read_questions(dup)
    missing = _write(tmp_path / "missing.jsonl", [{"question_id": "x"}])
    with pytest.raises(UserError, match="record 0: missing field 'question'"):
        read_questions(missing)
    no_answer = _write(tmp_path / "ans.jsonl", [{"question_id": "x", "answer": None}])
    with pytest.raises(UserError, match="missing field 'answer'"):
        read_answers(no_answer)


def test_matching_names_missing_ids_on_both_sides(questions: Path) -> None:
    qs = read_questions(questions)
    answers = [Answer("a1", "red"), Answer("zz", "stray")]
    with pytest.raises(UserError) as err:
        match_answers(qs, answers, "answers.jsonl")
    message = str(err.value)
    assert "2 question(s) have no answer: a2, 3" in message and "1 answer(s) match no question: zz" in message
    many = [Answer(f"extra{i}", "") for i in range(9)] + [Answer(q.question_id, "") for q in qs]
    with pytest.raises(UserError, match=r"extra4 \.\.\. and 4 more"):
        match_answers(qs, many, "answers.jsonl")


# --- endpoint ----------------------------------------------------------------------------------


def test_endpoint_answers_plain_and_alpaca(questions: Path, tmp_path: Path) -> None:
    backend = ScriptedLLM(lambda r: "reply to: " + r.messages[-1].content[-20:], model_id="served-model")
    out = tmp_path / "answers.jsonl"
    settings = SamplingSettings(temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3, prompt_format="plain")
    summary = answer_file(questions, out, settings, backend=backend)
    assert summary.answered == 3 and summary.model_id == "served-model"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["a1", "a2", "3"]
    assert [r["class"] for r in rows] == ["brainstorming", "rewrite", "rewrite"]
    assert rows[0]["settings"] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 64,
        "seed": 3,
        "prompt_format": "plain",
    }
    sent = {r.messages[-1].content for r in backend.requests}
    assert "Name a colour." in sent
    first = backend.requests[0]
    assert (first.temperature, first.top_p, first.max_tokens, first.seed) == (0.7, 0.9, 64, 3)

    alpaca = ScriptedLLM(lambda r: "ok", model_id="served-model")
    answer_file(
        questions, tmp_path / "b.jsonl", SamplingSettings(prompt_format="alpaca"), backend=alpaca, model_id="my-label"
    )
    assert question_prompt("Name a colour.") in {r.messages[-1].content for r in alpaca.requests}
    assert json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["model_id"] == "my-label"


def test_truncated_answers_are_kept_not_retried(questions: Path, tmp_path: Path) -> None:
    backend = ScriptedLLM(lambda r: Completion("a long answer cut", Usage(1, 1), "length"))
    out = tmp_path / "answers.jsonl"
    answer_file(questions, out, SamplingSettings(prompt_format="plain"), backend=backend)
    assert len(backend.requests) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["finish_reason"] == "length" and r["answer"] == "a long answer cut" for r in rows)


def test_a_cut_answer_cached_by_the_first_release_still_reads_as_cut(questions: Path, tmp_path: Path) -> None:
    """0.1.0 kept a cut answer in the cache with finish_reason "max_tokens"; a rerun answers from it."""
    backend = ScriptedLLM(lambda r: Completion("a long answer cut", Usage(1, 1), "length"))
    out = tmp_path / "answers.jsonl"
    answer_file(questions, out, SamplingSettings(prompt_format="plain"), backend=backend)
    with sqlite3.connect(tmp_path / "answers.jsonl.cache.sqlite") as conn:
        conn.execute("UPDATE llm_calls SET finish_reason = 'max_tokens'")
    answer_file(questions, out, SamplingSettings(prompt_format="plain"), backend=backend)
    assert len(backend.requests) == 3  # all from the cache
    assert all(json.loads(line)["finish_reason"] == "length" for line in out.read_text().splitlines())


def test_failed_answers_stop_without_output_then_resume(questions: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    endpoint = EndpointSettings(retries=1, retry_delay=0)

    def flaky(request: CompletionRequest) -> str | BaseException:
        if "Say hi." in request.messages[-1].content:
            return TransientLLMError("HTTP 502")
        return "fine"

    with pytest.raises(RunStopped, match=r"1 question\(s\) got no answer .*3"):
        answer_file(
            questions, out, SamplingSettings(prompt_format="plain"), backend=ScriptedLLM(flaky), endpoint=endpoint
        )
    assert not out.exists()
    again = ScriptedLLM(lambda r: "hello")
    answer_file(questions, out, SamplingSettings(prompt_format="plain"), backend=again, endpoint=endpoint)
    assert len(again.requests) == 1  # the two finished answers came from the cache
    assert [json.loads(line)["answer"] for line in out.read_text().splitlines()] == ["fine", "fine", "hello"]


def test_answer_command_errors(questions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.jsonl"
    assert main(["answer", "--questions", str(questions), "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["answer", "--questions", str(questions), "--out", str(out), "--endpoint", "http://x/v1"]) == 2
    assert "--model NAME" in capsys.readouterr().err
    assert main(["answer", "--questions", str(questions), "--out", str(out), "--model", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not out.exists()


# --- local batched generation ------------------------------------------------------------------


def test_left_padded_batches_match_single_prompts(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from explore_instruct.evaluate.answer import generate_local
    from explore_instruct.evaluate.questions import Question
    from explore_instruct.train.models import ModelSource, load_tokenizer
    from explore_instruct.train.tiny import build_tiny_llama

    texts = ["Hi.", "Write one long sentence about rivers and stones and clouds.", "Count to three, please."]
    path = build_tiny_llama(tmp_path / "tiny", texts, seed=1)
    tokenizer = load_tokenizer(ModelSource(str(path)))
    model = AutoModelForCausalLM.from_pretrained(path)
    qs = [Question(f"q{i}", t) for i, t in enumerate(texts)]
    settings = SamplingSettings(max_new_tokens=6)
    batched = generate_local(model, tokenizer, qs, settings, batch_size=3)
    single = [generate_local(model, tokenizer, [q], settings, batch_size=1)[0] for q in qs]
    assert [a.question_id for a in batched] == ["q0", "q1", "q2"]
    assert [a.text for a in batched] == [a.text for a in single]


def test_a_repeated_question_is_answered_once(tmp_path: Path) -> None:
    # Two ids with the same question make identical requests in flight together: one call, two answers.
    questions = _write(
        tmp_path / "rep.jsonl",
        [{"question_id": "x", "question": "Name a colour."}, {"question_id": "y", "question": "Name a colour."}],
    )
    backend = ScriptedLLM(lambda r: "red", latency=0.02)
    out = tmp_path / "answers.jsonl"
    answer_file(questions, out, SamplingSettings(prompt_format="plain"), backend=backend)
    assert len(backend.requests) == 1
    assert [json.loads(line)["answer"] for line in out.read_text().splitlines()] == ["red", "red"]


# --- which prompt template a local model gets ----------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from explore_instruct.train.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "m", ["Name a colour.", "Say hi."], seed=2)


def _copy_with_template(src: Path, dst: Path, template: str | None) -> Path:
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    tokenizer = AutoTokenizer.from_pretrained(dst)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(dst)
    return dst


def _answer_locally(
    questions: Path, model: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[int, list[str], list[dict]]:
    """Run `answer --model FOLDER`, returning the exit code, the prompts the model got, and the records."""
    from explore_instruct.evaluate import answer as answer_module

    prompts: list[str] = []
    real_render = answer_module.render

    def spy(question, prompt_format, tokenizer=None):  # type: ignore[no-untyped-def]
        prompts.append(real_render(question, prompt_format, tokenizer))
        return prompts[-1]

    monkeypatch.setattr(answer_module, "render", spy)
    args = ["answer", "--questions", str(questions), "--model", str(model), "--out", str(out)]
    code = main([*args, "--max-new-tokens", "2", *extra])
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, prompts, records


def test_a_model_with_its_own_chat_template_gets_that_template(
    questions: Path, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _copy_with_template(tiny_folder, tmp_path / "chatty", CHAT_TEMPLATE)
    code, prompts, records = _answer_locally(questions, model, tmp_path / "a.jsonl", monkeypatch)
    assert code == 0
    assert prompts and all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)
    assert "<|user|>Name a colour.\n<|assistant|>" in prompts
    assert {r["settings"]["prompt_format"] for r in records} == {"chat"}


@pytest.mark.parametrize("marker", ["alpaca template", "train_settings.json", "no template"])
def test_a_model_train_wrote_or_a_base_model_gets_alpaca(
    marker: str, questions: Path, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from explore_instruct.train.prompting import alpaca_chat_template

    template = {
        "alpaca template": alpaca_chat_template(bos_token=False),
        "train_settings.json": CHAT_TEMPLATE,  # a template of its own, but the folder says `train` wrote it
        "no template": None,
    }[marker]
    model = _copy_with_template(tiny_folder, tmp_path / "m", template)
    if marker == "train_settings.json":
        (model / "train_settings.json").write_text("{}", encoding="utf-8")
    code, prompts, records = _answer_locally(questions, model, tmp_path / "a.jsonl", monkeypatch)
    assert code == 0
    assert prompts and all(p.startswith("Below is an instruction") for p in prompts)
    assert {r["settings"]["prompt_format"] for r in records} == {"alpaca"}


def test_chat_format_needs_a_template_and_an_explicit_format_wins(
    questions: Path,
    tiny_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, _ = _answer_locally(questions, tiny_folder, tmp_path / "a.jsonl", monkeypatch, "--prompt-format", "chat")
    assert code == 2 and "needs a tokenizer with a chat template" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()
    model = _copy_with_template(tiny_folder, tmp_path / "chatty", CHAT_TEMPLATE)
    code, prompts, records = _answer_locally(
        questions, model, tmp_path / "b.jsonl", monkeypatch, "--prompt-format", "plain"
    )
    assert code == 0 and "Say hi." in prompts
    assert {r["settings"]["prompt_format"] for r in records} == {"plain"}


def test_endpoint_auto_is_plain_and_chat_is_refused(questions: Path, tmp_path: Path) -> None:
    backend = ScriptedLLM(lambda r: "ok")
    answer_file(questions, tmp_path / "a.jsonl", SamplingSettings(), backend=backend)
    assert backend.requests[0].messages[-1].content in {"Name a colour.", "Rewrite: he go home.", "Say hi."}
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert {r["settings"]["prompt_format"] for r in rows} == {"plain"}
    with pytest.raises(UserError, match="for a local model"):
        answer_file(questions, tmp_path / "b.jsonl", SamplingSettings(prompt_format="chat"), backend=backend)
