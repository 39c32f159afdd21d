"""Config files (YAML and TOML), command-line overrides, the example configs' recipe, and errors
that name the option at fault."""

import math
from pathlib import Path

import pytest

from wan_egoexo_training.config import build_parser, config_from_args, load_config
from wan_egoexo_training.step.optim import effective_lr, warmup_factor
from wan_egoexo.errors import InputError

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name, task, reference", [("exo2ego", "exo2ego", False), ("ego2exo", "ego2exo", True)])
def test_example_configs_hold_the_authors_recipe(name, task, reference):
    c = load_config(CONFIGS / f"{name}.yaml")
    assert c.task == task
    assert (c.lora.rank, c.lora.alpha) == (80, 80)
    assert c.lora.target_modules == ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    assert c.optim.betas == [0.9, 0.95] and c.optim.eps == 1e-8 and c.optim.weight_decay == 0.01
    assert c.optim.lr == 5e-5 and c.optim.scale_lr and c.optim.warmup_steps == 10
    assert c.train.flow_shift == 5.0 and c.train.num_train_timesteps == 1000 and c.train.prompt_dropout == 0.1
    assert c.train.mixed_precision == "bf16" and c.train.gradient_checkpointing
    assert (c.data.num_frames, c.data.frame_stride, c.data.height, c.data.width) == (49, 2, 704, 1280)
    assert c.data.hflip == 0.0  # augmentations off by default


def test_lr_scaling_and_warmup_follow_the_authors():
    c = load_config(CONFIGS / "exo2ego.yaml")
    assert effective_lr(c.optim, world_size=4, grad_accum=1) == pytest.approx(1e-4)
    assert effective_lr(c.optim, world_size=2, grad_accum=8) == pytest.approx(5e-5 * 4)
    assert [warmup_factor(s, 10) for s in (0, 5, 10, 500)] == [0.0, 0.5, 1.0, 1.0]


def test_command_line_overrides_every_kind_of_option(tmp_path):
    parser = build_parser("t", "t")
    args = parser.parse_args(["--config", str(CONFIGS / "exo2ego.yaml"), "--train.max_steps", "20",
                              "--optim.lr", "1e-4", "--optim.grad_clip", "1.5", "--train.gradient_checkpointing",
                              "false", "--lora.target_modules", "to_q,to_v", "--validation.stems", "[a, b]",
                              "--model.vae", "none", "--task", "one2three"])
    c = config_from_args(args)
    assert c.train.max_steps == 20 and c.optim.lr == 1e-4 and c.optim.grad_clip == 1.5
    assert c.train.gradient_checkpointing is False and c.lora.target_modules == ["to_q", "to_v"]
    assert c.validation.stems == ["a", "b"] and c.model.vae is None and c.task == "one2three"
    assert c.train.batch_size == 4  # untouched options keep the file's value


def test_toml_config(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "ego2exo"\n[train]\nmax_steps = 7\n[lora]\nrank = 16\nalpha = 32\n')
    c = load_config(path)
    assert (c.task, c.train.max_steps, c.lora.rank, c.lora.alpha) == ("ego2exo", 7, 16, 32.0)


@pytest.mark.parametrize("overrides, named", [
    ({"train": {"batch_sise": 2}}, "train.batch_sise"),
    ({"data": {"num_frames": 48}}, "data.num_frames"),
    ({"data": {"height": 700}}, "data.height"),
    ({"train": {"max_steps": "many"}}, "train.max_steps"),
    ({"optim": {"betas": [0.9]}}, "optim.betas"),
    ({"task": "sideways"}, "sideways"),
    ({"validation": {"every": 10}}, "validation.stems"),
])
def test_bad_options_name_the_option(overrides, named):
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        load_config(overrides=overrides)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    assert math.isfinite(load_config().optim.lr)
