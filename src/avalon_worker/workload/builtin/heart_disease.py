"""`heart-disease-eval`: Avalon's heart disease risk workload, computed as its C++ computes it.

From hyperledger/avalon `examples/apps/heart_disease_eval/workload/`
(`heart_disease_evaluation_logic.cpp` and `heart_disease_evaluation_plug-in.cpp`, commit cf762fd,
Apache-2.0). An input item is text such as `Data: 25 10 1 67 102 125 1 95 5 10 1 11 36 1`: what
follows the first `:` is 14 integers (age, sex, chest pain type, resting blood pressure,
cholesterol, fasting blood sugar, resting ECG, maximum heart rate, exercise angina, ST
depression, ST slope, vessels, thallium test, diagnosis). Each is scored 0–100 and weighted; the
answer is `You have a N% risk of heart disease`. An item with nothing after its `:` (or no `:`)
asks for the running average instead: `Heart disease risk is N% for M people`.

As in Avalon, that average covers every evaluation this worker process has made, across work
orders and requesters (Avalon keeps it in the enclave's static variables, and so per enclave):
one process (`--workers 1`) gives one average. Several input items are evaluated in index
order and the order answers with the last one's text. The texts, including the error texts,
are Avalon's byte for byte; they are results, not errors, as in Avalon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..base import Workload
from ._cpp_text import InvalidArgument, StoiError, c_divide, int32, stoi, to_string

NO_HISTORY = b"No accumulated heart disease history"
BAD_NUMBER = b"Invalid data found in input data"
BAD_FORMAT = b"Error with missing or incorrect input format"
FAILED = b"Caught exception while processing workload data"
FACTORS = 14


def _model_a(high: float, optimum: float, data: float) -> float:
    """100 at or below the optimum, falling linearly to 0 at `high`."""
    if data < optimum:
        return 100.0
    if data < high:
        return 100 * (high - data) / (high - optimum)
    return 0.0


def _model_b(high: float, optimum: float, data: float) -> float:
    """100 at the optimum, falling linearly to 0 at the same distance as `high` on either side."""
    delta = abs(data - optimum)
    if delta < high - optimum:
        return 100 - 100 * delta / (high - optimum)
    return 0.0


def _chest_pain(kind: int) -> float:
    return {1: 0.0, 2: 12.0, 3: 35.0}.get(kind, 100.0)


def _resting_ecg(kind: int) -> float:
    return {1: 9.0, 2: 7.0}.get(kind, 100.0)


def _slope(kind: int) -> float:
    return {0: 49.0, 1: 100.0}.get(kind, 63.0)


def _vessels(count: int) -> float:
    return {0: 0.0, 1: 35.0, 2: 70.0}.get(count, 100.0)


def _thallium(minutes: int) -> float:
    if 3 <= minutes < 6:
        return 45.0
    if 6 <= minutes < 8:
        return 79.0
    return 100.0 if minutes >= 8 else 0.0


# (score of the factor's integer, weight), in the order of the input and of the C++ sum.
_FACTORS: tuple[tuple[Callable[[int], float], float], ...] = (
    (lambda v: _model_a(100, 18, v), 0.03),  # age
    (lambda v: 100.0 if v == 0 else 0.0, 0.01),  # sex: 0 female, 1 male
    (_chest_pain, 0.21),
    (lambda v: _model_a(218, 108, v), 0.05),  # resting blood pressure (mm Hg)
    (lambda v: _model_a(309, 126, v), 0.05),  # serum cholesterol (mg/dl)
    (lambda v: _model_a(248, 98, v), 0.04),  # fasting blood sugar (mg/dl)
    (_resting_ecg, 0.19),
    (lambda v: _model_b(198, 61, v), 0.06),  # maximum heart rate
    (lambda v: 0.0 if v == 1 else 100.0, 0.18),  # exercise induced angina
    (lambda v: _model_a(100.0, 0.0, v), 0.05),  # ST depression
    (_slope, 0.03),
    (_vessels, 0.04),
    (_thallium, 0.02),
    (lambda v: 100.0 if v == 0 else 0.0, 0.04),  # diagnosis
)


def risk(values: Sequence[bytes]) -> int:
    """The risk in percent for the 14 factors, as `std::stoi` reads them, left to right (the
    first bad one decides the error). Raises `StoiError`."""
    total = 0.0
    for (score, weight), text in zip(_FACTORS, values, strict=True):
        total = total + score(stoi(text)) * weight
    return 100 - int(total)


class HeartDiseaseWorkload(Workload):
    """`HeartDiseaseEvalLogic::executeWorkOrder`, with its running totals per process."""

    def __init__(self) -> None:
        self.total_risk = 0
        self.count = 0

    def evaluate(self, text: bytes) -> bytes:
        """The answer to one input item; updates the running average when it scores one."""
        fields = [part for part in text.split(b":") if part]
        data = fields[1] if len(fields) > 1 else b""
        values = [part for part in data.split(b" ") if part]
        if not values:
            if self.count == 0:
                return NO_HISTORY
            average = c_divide(self.total_risk, self.count)
            return b"Heart disease risk is " + to_string(average) + b"% for " + to_string(self.count) + b" people"
        if len(values) != FACTORS:
            return BAD_FORMAT
        try:
            value = risk(values)
        except InvalidArgument:
            return BAD_NUMBER
        except StoiError:  # std::out_of_range, caught by the outer catch (...)
            return FAILED
        self.total_risk = int32(self.total_risk + value)
        self.count = int32(self.count + 1)
        return b"You have a " + to_string(value) + b"% risk of heart disease"

    def run(self, inputs: Sequence[bytes]) -> bytes:
        result = b""
        for text in inputs:  # Avalon's plug-in first evaluates "", which changes nothing
            result = self.evaluate(text)
        return result
