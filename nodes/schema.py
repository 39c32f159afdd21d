"""The pack's V3 node vocabulary (ComfyUI's ``comfy_api.latest``): the WW_* sockets as io types, made
once here (``io.Custom`` makes a new class on every call), and the choice check that ComfyUI 0.3.64
leaves to the node (it checks only V1 list menus; 0.33.0 checks V3 menus itself, before running).

Importing this module needs a ComfyUI on sys.path (``comfy_api``), as every node module does now.
"""

from __future__ import annotations

from comfy_api.latest import io

from wan_egoexo.errors import InputError

from . import handles

WWModel = io.Custom(handles.MODEL)
WWVae = io.Custom(handles.VAE)
WWTextEncoder = io.Custom(handles.TEXT_ENCODER)
WWText = io.Custom(handles.TEXT)
WWContext = io.Custom(handles.CONTEXT)
WWFit = io.Custom(handles.FIT)


def schema_inputs(cls) -> dict:
    """{input id: io input} of a node class's schema, in the declared order."""
    return {item.id: item for item in cls.define_schema().inputs}


def check_choices(cls, **values) -> None:
    """InputError naming the first of ``values`` (input name -> value) that is not one of its menu's options."""
    inputs = schema_inputs(cls)
    for name, value in values.items():
        options = list(inputs[name].options)
        if value not in options:
            raise InputError(f"{name}: {value!r} is not one of the choices {options}.")
