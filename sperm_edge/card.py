"""The model card: what a trained model is and how to feed it, one type for checkpoints and bundles.

A checkpoint's metadata (`best.json`) and a bundle's manifest (`manifest.json`) record these under the same
top-level keys; each file reads them through `ModelCard.from_record` and writes them with `to_record`.
torch-free: the classify-only runtime reads bundles' cards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sperm_edge.data.presets import abnormal_classes
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import PreprocessSpec


@dataclass(frozen=True)
class ModelCard:
    arch: str
    classes: list[str]  # in the order of the model's outputs
    preprocess: PreprocessSpec
    normal_class: str | None = None
    abnormal_classes: list[str] = field(default_factory=list)  # what a person should look at
    temperature: float = 1.0  # temperature scaling T, fitted on the validation split (1.0: none recorded)
    framing: dict | None = None  # how the training crops frame a head (`export.framing`); bundles only
    versions: dict[str, str] = field(default_factory=dict)  # the packages that wrote the file

    @classmethod
    def from_record(cls, record: dict, where: str = "model record") -> ModelCard:
        """The card in a checkpoint's metadata or a bundle's manifest; `where` names the file in errors."""
        try:
            classes = [str(name) for name in record["classes"]]
            normal = record.get("normal_class")
            return cls(
                arch=str(record["arch"]),
                classes=classes,
                preprocess=PreprocessSpec.from_dict(record["preprocess"]),
                normal_class=normal,
                abnormal_classes=list(record.get("abnormal_classes") or abnormal_classes(classes, normal)),
                temperature=float(record.get("temperature", 1.0)),
                framing=record.get("framing"),
                versions=dict(record.get("versions") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise SpermEdgeError(f"{where} does not describe a model: {type(err).__name__} {err}") from err

    def to_record(self) -> dict:
        """The card's keys as the files record them (`versions` is written by each file's writer)."""
        record = {
            "arch": self.arch,
            "classes": list(self.classes),
            "normal_class": self.normal_class,
            "abnormal_classes": list(self.abnormal_classes),
            "preprocess": self.preprocess.to_dict(),
            "temperature": self.temperature,
        }
        return record | ({"framing": self.framing} if self.framing is not None else {})
