"""A data set described once: its fields, their kinds, and how a row becomes model input.

Every model here reads a row as ``width`` (id, weight) pairs: FM's linear term sums
``w[id] * weight``, its pairwise term and the MLPs read ``embedding[id] * weight``. A data
set's schema says which fields fill those positions:

- ``numeric``: one position with the field's own id and the scaled value as the weight
  (Criteo's I1..I13);
- ``categorical``: one position with the value's id, weight 1 (or the field's OOV id);
- ``sequence``: ``width`` positions, one per token of a variable-length list such as a
  film's genres, each token weighted 1/k for k tokens (a mean); unused positions hold the
  field's OOV id with weight 0, so they add nothing to any model.

Positions whose weights vary (numeric, sequence) come first in a row and are the only
weights a record stores; the rest are 1. Ids below ``reserved`` are per-field ids (a
numeric field's own id, a categorical field's OOV id); values kept from training follow.
The preprocessing of each source writes its layout to stats.json, and the models' field
count comes from there, not from a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["categorical", "numeric", "sequence"]
_VARYING_WEIGHTS = ("numeric", "sequence")


class DataFormatError(ValueError):
    """Bad input, with the file, the 1-based line number and the field to look at."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        where = self.path
        if line is not None:
            where += f": line {line}"
        if field is not None:
            where += f", field {field}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class FieldSpec:
    """One input field: its name, its kind and how many row positions it fills."""

    name: str
    kind: Kind
    width: int = 1  # a sequence's most tokens; 1 otherwise

    def __post_init__(self) -> None:
        if self.width < 1 or (self.width > 1 and self.kind != "sequence"):
            raise ValueError(f"field {self.name}: width {self.width} for kind {self.kind}")


@dataclass(frozen=True)
class Schema:
    """A data set's fields in row order, and its label rule (in words, for the report)."""

    name: str
    fields: tuple[FieldSpec, ...]
    label: str

    def __post_init__(self) -> None:
        kinds = [f.kind in _VARYING_WEIGHTS for f in self.fields]
        if kinds != sorted(kinds, reverse=True):
            raise ValueError(f"{self.name}: numeric and sequence fields must come first")

    def layout(self) -> Layout:
        return Layout(
            width=sum(f.width for f in self.fields),
            weighted=sum(f.width for f in self.fields if f.kind in _VARYING_WEIGHTS),
            reserved=len(self.fields),
        )

    def to_json(self) -> dict[str, Any]:
        """What stats.json records: the fields, the label rule and the row layout."""
        return {
            "name": self.name,
            "label": self.label,
            "fields": [{"name": f.name, "kind": f.kind, "width": f.width} for f in self.fields],
            **self.layout().__dict__,
        }


@dataclass(frozen=True)
class Layout:
    """A preprocessed row's shape: what the record format and the models need to know."""

    width: int  # positions per row: a model's field_size
    weighted: int  # leading positions whose weights are stored
    reserved: int  # ids below this are per-field ids (numeric ids, OOV ids)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row in a record: int32 ids, float32 stored weights, float32 label."""
        return 4 * (self.width + self.weighted + 1)

    @classmethod
    def of(cls, schema_json: dict[str, Any]) -> Layout:
        return cls(schema_json["width"], schema_json["weighted"], schema_json["reserved"])
