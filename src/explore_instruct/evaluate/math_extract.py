"""Pull a final answer out of free text, and a LaTeX-normalising comparison for what math-verify
cannot parse.

Extraction order for a model's text: the last `\\boxed{}` / `\\fbox{}`, else the last "Answer:" (or
"the answer is") line, else the last number.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*")


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at `text[start]`, or None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed `\\boxed{...}` or `\\fbox{...}` (also `\\boxed 5`)."""
    for match in reversed(list(_BOX_START.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            content = _braced(text, end)
            if content is not None:
                return content.strip()
        elif match.group(0).endswith(" "):  # "\boxed 5": up to the next space or dollar sign
            token = re.match(r"[^\s$]+", text[end:])
            if token:
                return token.group(0)
    return None


_ANSWER_LINE = re.compile(r"answer\s*(?:is\s*:?|:)\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


def _clean_answer_text(text: str) -> str:
    text = text.strip().rstrip(".").strip()
    if len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text.strip("$").strip()
    if text.startswith("\\(") and text.endswith("\\)"):
        text = text[2:-2].strip()
    return text


_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")


def _from_answer_line(text: str) -> str:
    """An "Answer:" line may hold a sentence ("the total is 12 apples"): then its last number."""
    inner = last_boxed(text)
    if inner:
        return inner
    numbers = _NUMBER.findall(text)
    if len(_PROSE_WORD.findall(text)) >= 3 and numbers:
        return str(numbers[-1]).replace(",", "").replace(" ", "")
    return text


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how) where how is "boxed", "answer-line", "last-number" or "none"."""
    boxed = last_boxed(text)
    if boxed:
        return boxed, "boxed"
    lines = _ANSWER_LINE.findall(text)
    for candidate in reversed(lines):
        cleaned = _clean_answer_text(candidate)
        if cleaned:
            return _from_answer_line(cleaned), "answer-line"
    numbers = _NUMBER.findall(text)
    if numbers:
        return str(numbers[-1]).replace(",", "").replace(" ", ""), "last-number"
    return None, "none"


def extract_reference(std_answer: str) -> str | None:
    """The reference answer: the solution's last box, else a short solution taken whole."""
    boxed = last_boxed(std_answer)
    if boxed:
        return boxed
    text = std_answer.strip()
    if text and len(text) <= 64 and "\n" not in text:
        return _clean_answer_text(text)
    answer, how = extract_answer(text)
    return answer if how != "none" else None


# --- LaTeX normalisation -----------------------------------------------------------------------

# A text group, with the power of a unit after it ("\\text{ cm}^2").
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}(?:\^\{?\d\}?)?")
_DROP = [
    r"\left",
    r"\right",
    r"\!",
    r"\,",
    r"\;",
    r"\:",
    r"\ ",
    r"\displaystyle",
    "~",
    r"^\circ",
    r"^{\circ}",
    "°",
    r"\%",
    "%",
    r"\$",
    "$",
]
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")  # \frac12
_FRAC_HALF = re.compile(r"\\frac\s*(\d)\s*\{")  # \frac1{13}
_FRAC_HALF2 = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")  # \frac{1}2
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")  # \sqrt2
_ASSIGN = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?!.*=)")  # "x = 5" -> "5"
_NUMBER_WITH_UNITS = re.compile(r"^(-?[\d.,]+(?:/\d+)?)\s*[a-zA-Z][a-zA-Z .]*$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def normalize_latex(answer: str) -> str:
    """A canonical string: no sizing commands, units, degree/percent signs or spacing; `\\dfrac` and
    `\\tfrac` as `\\frac`; shorthand `\\frac12` and `\\sqrt2` with braces; lower case."""
    s = answer.strip()
    for wrapper in (r"\(", r"\)", r"\[", r"\]"):
        s = s.replace(wrapper, "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    for token in _DROP:
        s = s.replace(token, "")
    texts = _TEXT_CMD.findall(s)
    without_text = _TEXT_CMD.sub("", s).strip()
    # Text next to a number is a unit ("5 \text{ inches}"); text alone is the answer ("\text{Monday}").
    s = without_text if texts and re.search(r"\d", without_text) else _TEXT_CMD.sub(r"\1", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF.sub(r"\\frac{\1}{", s)
    s = _FRAC_HALF2.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _ASSIGN.sub("", s.strip())
    units = _NUMBER_WITH_UNITS.match(s.strip())
    if units:
        s = units.group(1)
    s = s.strip().rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = re.sub(r"\s+", "", s).lower()
    if s.startswith("."):
        s = "0" + s
    return s


_SIMPLE_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")


def as_number(normalized: str) -> Fraction | None:
    """The exact value of a plain number, a/b or \\frac{a}{b}, else None."""
    m = _SIMPLE_FRAC.match(normalized)
    try:
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        if re.fullmatch(r"-?\d+(?:\.\d+)?(?:/-?\d+)?", normalized):
            return Fraction(normalized)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def normalized_equal(a: str, b: str) -> bool:
    """Equal after normalisation, as strings or as exact numbers."""
    na, nb = normalize_latex(a), normalize_latex(b)
    if na == nb and na:
        return True
    va, vb = as_number(na), as_number(nb)
    return va is not None and va == vb
