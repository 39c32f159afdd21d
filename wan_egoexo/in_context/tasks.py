"""The two WorldWander tasks: their names, aliases, fixed prompts, and which parts they use."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Task:
    name: str  # our name: "exo2ego" or "ego2exo"
    authors_name: str  # the authors' name: "three2one" or "one2three"
    prompt: str  # the fixed prompt the released LoRAs were trained with
    uses_reference: bool  # ego->exo conditions on a reference image of the subject
    source_view: str
    target_view: str


EXO2EGO = Task(
    name="exo2ego",
    authors_name="three2one",
    prompt="Transform it into the first-person perspective.",
    uses_reference=False,
    source_view="third-person (exo)",
    target_view="first-person (ego)",
)
EGO2EXO = Task(
    name="ego2exo",
    authors_name="one2three",
    prompt="Transform it into the third-person perspective.",
    uses_reference=True,
    source_view="first-person (ego)",
    target_view="third-person (exo)",
)

TASKS = {task.name: task for task in (EXO2EGO, EGO2EXO)}
_ALIASES = {
    "exo2ego": EXO2EGO, "three2one": EXO2EGO, "exo->ego": EXO2EGO, "exo_to_ego": EXO2EGO,
    "ego2exo": EGO2EXO, "one2three": EGO2EXO, "ego->exo": EGO2EXO, "ego_to_exo": EGO2EXO,
}


def get_task(name: str | Task) -> Task:
    """Look a task up by our name or the authors' (three2one / one2three)."""
    if isinstance(name, Task):
        return name
    try:
        return _ALIASES[str(name).strip().lower()]
    except KeyError:
        raise InputError(
            f"task: {name!r} is not a WorldWander task; expected 'exo2ego' (alias 'three2one') "
            f"or 'ego2exo' (alias 'one2three')."
        ) from None
