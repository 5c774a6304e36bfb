"""The Alpaca prompt template, in one place for training and for local answering.

A model is trained on `prompt + completion` with the loss on the completion only, and later asked
the same `prompt` at answer time, so both sides must build it with these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from explore_instruct.datafile import text_field
from explore_instruct.errors import UserError

# The Alpaca instruction format (the paper fine-tunes with it), with and without an input field.
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def build_prompt(instruction: str, input_text: str = "") -> str:
    """The prompt for one instruction; an empty or blank input selects the no-input form."""
    instruction = instruction.strip()
    input_text = (input_text or "").strip()
    if input_text:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input_text)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def question_prompt(question: str) -> str:
    """The prompt for an evaluation question: the whole question is the instruction, no input."""
    return build_prompt(question)


def to_prompt_completion(rec: Mapping[str, Any], where: str = "record") -> dict[str, str]:
    """An Alpaca record (`instruction`, optional `input`, `output`) as a prompt/completion pair."""
    instruction = text_field(rec, "instruction", where, required=True)
    output = text_field(rec, "output", where, required=True)
    if not instruction.strip():
        raise UserError(f"{where}: 'instruction' is empty")
    if not output.strip():
        raise UserError(f"{where}: 'output' is empty")
    input_text = text_field(rec, "input", where, required=False)
    return {"prompt": build_prompt(instruction, input_text), "completion": output.strip()}


def build_pairs(records: Iterable[Mapping[str, Any]], source: str = "data") -> list[dict[str, str]]:
    """Prompt/completion pairs for every record; a bad record stops with its index in the message."""
    pairs = [to_prompt_completion(rec, f"{source}: record {i}") for i, rec in enumerate(records)]
    if not pairs:
        raise UserError(f"{source}: no records to train on")
    return pairs


def alpaca_chat_template(*, bos_token: bool) -> str:
    """A Jinja chat template that renders the last user message as the no-input Alpaca prompt.

    Saved with a trained model's tokenizer, so a chat endpoint serving it (e.g. vLLM) sends the
    model exactly what it was trained on. `bos_token`: whether plain tokenisation adds a BOS token,
    which chat servers leave to the template.
    """
    head, tail = PROMPT_NO_INPUT.split("{instruction}")
    return (
        "{%- set ns = namespace(text='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{%- set ns.text = message['content'] -%}{%- endif -%}"
        "{%- endfor -%}"
        + ("{{ bos_token }}" if bos_token else "")
        + "{{ "
        + repr(head)
        + " }}{{ ns.text | trim }}{{ "
        + repr(tail)
        + " }}"
    )
