"""The control catalogue: frameworks, their controls, and the evidence measures each control is served by.

It is data (`controls.yaml`, shipped with the package), validated on load: a measure that Custodes does not
compute is an error naming its place in the file."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from custodes.reports.measures import MEASURES
from custodes.yamlfile import parse_yaml

CATALOGUE = "controls.yaml"


class Control(BaseModel):
    """One control of a framework and the measures that are its evidence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64)]
    title: Annotated[str, Field(min_length=1, max_length=300)]
    measures: Annotated[list[str], Field(min_length=1)]

    @field_validator("measures")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in MEASURES]
        if unknown:
            raise ValueError(f"unknown measure {unknown[0]!r}; known: {', '.join(MEASURES)}")
        return value


class Framework(BaseModel):
    """A framework's title and controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Annotated[str, Field(min_length=1, max_length=200)]
    controls: Annotated[list[Control], Field(min_length=1)]


class Catalogue(BaseModel):
    """Every measure's title, and every framework by its short name (as `--framework` takes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    measures: dict[str, Annotated[str, Field(min_length=1, max_length=200)]]
    frameworks: Annotated[dict[str, Framework], Field(min_length=1)]

    @field_validator("measures")
    @classmethod
    def _every_measure(cls, value: dict[str, str]) -> dict[str, str]:
        if list(value) != list(MEASURES):
            raise ValueError(f"must give a title to each measure, in this order: {', '.join(MEASURES)}")
        return value


def parse_catalogue(text: str, file: str) -> Catalogue:
    """Validate a catalogue's YAML text; problems are located in `file`."""
    return parse_yaml(text, file).validate(Catalogue)


@cache
def catalogue() -> Catalogue:
    """The shipped catalogue."""
    source = resources.files("custodes.reports").joinpath(CATALOGUE)
    return parse_catalogue(source.read_text(encoding="utf-8"), f"custodes/reports/{CATALOGUE}")
