"""The --arch spec (portnn.arch): every spelling, nesting, the round trip through
format_arch, every parse error with its caret; and ``portnn train --arch`` end to end
(training, usage errors, --save + eval, --checkpoint + --resume)."""

import json
import os
import re
import subprocess
import sys

import pytest

from portnn.arch import format_arch, parse_arch
from portnn.blocks import (
    Affine,
    AvgPool,
    BatchNorm,
    Block,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    LayerNorm,
    MaxPool,
    ReLU,
    Residual,
)
from portnn.cli import main

# --------------------------------------------------------------------------- spellings


def configs(spec):
    return [b.config() for b in parse_arch(spec)]


@pytest.mark.parametrize("spec, expected", [
    ("conv32", {"block": "Conv", "num_filters": 32, "filter_size": 3, "stride": 1, "pad": None}),
    ("conv32x5", {"block": "Conv", "num_filters": 32, "filter_size": 5, "stride": 1, "pad": None}),
    ("conv32x5s2", {"block": "Conv", "num_filters": 32, "filter_size": 5, "stride": 2, "pad": None}),
    ("conv16s2", {"block": "Conv", "num_filters": 16, "filter_size": 3, "stride": 2, "pad": None}),
    ("conv16p0", {"block": "Conv", "num_filters": 16, "filter_size": 3, "stride": 1, "pad": 0}),
    ("conv8x4s2p1", {"block": "Conv", "num_filters": 8, "filter_size": 4, "stride": 2, "pad": 1}),
    ("conv8x1", {"block": "Conv", "num_filters": 8, "filter_size": 1, "stride": 1, "pad": None}),
    ("fc10", {"block": "Affine", "out_dim": 10}),
    ("pool2", {"block": "MaxPool", "size": 2, "stride": None}),
    ("pool3s2", {"block": "MaxPool", "size": 3, "stride": 2}),
    ("avgpool2", {"block": "AvgPool", "size": 2, "stride": None}),
    ("avgpool3s1", {"block": "AvgPool", "size": 3, "stride": 1}),
    ("gap", {"block": "GlobalAvgPool"}),
    ("bn", {"block": "BatchNorm", "momentum": 0.9, "eps": 1e-5}),
    ("ln", {"block": "LayerNorm", "eps": 1e-5}),
    ("gn4", {"block": "GroupNorm", "groups": 4, "eps": 1e-5}),
    ("relu", {"block": "ReLU"}),
    ("drop0.5", {"block": "Dropout", "keep_ratio": 0.5}),
    ("drop.25", {"block": "Dropout", "keep_ratio": 0.25}),
    ("drop1", {"block": "Dropout", "keep_ratio": 1.0}),
    ("drop0.9", {"block": "Dropout", "keep_ratio": 0.9}),
    ("flatten", {"block": "Flatten"}),
])
def test_each_spelling_gives_its_block(spec, expected):
    assert configs(spec) == [expected]


def test_the_blocks_are_the_classes_named():
    kinds = [type(b) for b in parse_arch("conv8 fc3 pool2 avgpool2 gap bn ln gn2 relu drop0.5 flatten res(relu)")]
    assert kinds == [Conv, Affine, MaxPool, AvgPool, GlobalAvgPool, BatchNorm, LayerNorm, GroupNorm, ReLU, Dropout,
                     Flatten, Residual]


@pytest.mark.parametrize("spec", ["conv32-bn-relu", "conv32 bn relu", " conv32 - bn\t\nrelu ", "conv32--bn -relu",
                                  "-conv32-bn-relu-"])
def test_spaces_and_dashes_only_separate(spec):
    assert configs(spec) == [Conv(32, 3).config(), BatchNorm().config(), ReLU().config()]


def test_a_full_network():
    spec = "conv32-bn-relu conv32-bn-relu pool2 conv64-bn-relu gap fc10"
    expected = [Conv(32, 3), BatchNorm(), ReLU(), Conv(32, 3), BatchNorm(), ReLU(), MaxPool(2), Conv(64, 3),
                BatchNorm(), ReLU(), GlobalAvgPool(), Affine(10)]
    assert configs(spec) == [b.config() for b in expected]


def test_residuals_and_nesting():
    (res, relu) = parse_arch("res(conv32-bn-relu conv32-bn) relu")
    assert type(res) is Residual and res.projection is False and type(relu) is ReLU
    assert [b.config() for b in res.blocks] == [b.config() for b in (Conv(32, 3), BatchNorm(), ReLU(), Conv(32, 3),
                                                                     BatchNorm())]
    (proj,) = parse_arch("resproj(conv64s2-bn-relu conv64-bn)")
    assert proj.projection is True and proj.blocks[0].config()["stride"] == 2 and len(proj.blocks) == 5
    outer = parse_arch("res(res(relu) bn) fc10")
    assert outer[0].config() == Residual(Residual(ReLU()), BatchNorm()).config() and type(outer[1]) is Affine
    # spaces (and dashes) around the parentheses
    for spec in ("res ( res ( relu ) bn ) fc10", "res(res(relu)-bn)-fc10", "res( res(relu)bn )fc10"):
        assert configs(spec) == [b.config() for b in outer], spec


# --------------------------------------------------------------------------- format_arch


@pytest.mark.parametrize("spec, canonical", [
    ("conv32-bn-relu conv32-bn-relu pool2 conv64-bn-relu gap fc10",
     "conv32 bn relu conv32 bn relu pool2 conv64 bn relu gap fc10"),
    ("conv32x3s1", "conv32"),
    ("conv32x5s2p0 pool2s2 pool2 avgpool3s1 gn4 ln drop0.5 drop1 flatten fc7",
     "conv32x5s2p0 pool2s2 pool2 avgpool3s1 gn4 ln drop0.5 drop1.0 flatten fc7"),
    ("res(conv32-bn-relu conv32-bn) relu", "res(conv32 bn relu conv32 bn) relu"),
    ("resproj ( conv64s2-bn-relu res(conv64-bn) )", "resproj(conv64s2 bn relu res(conv64 bn))"),
])
def test_format_is_the_inverse_of_parse(spec, canonical):
    blocks = parse_arch(spec)
    assert format_arch(blocks) == canonical
    assert configs(format_arch(blocks)) == [b.config() for b in blocks]


def test_format_of_constructed_blocks_and_configs():
    blocks = [Conv(8, 5, stride=2), MaxPool(2, 2), MaxPool(2), Dropout(1e-5), Dropout(0.1), Residual(ReLU(), Affine(3)),
              GroupNorm(2)]
    spec = format_arch(blocks)
    assert spec == "conv8x5s2 pool2s2 pool2 drop0.00001 drop0.1 res(relu fc3) gn2"
    assert configs(spec) == [b.config() for b in blocks]
    assert format_arch([b.config() for b in blocks]) == spec  # config dicts are blocks too


class _Custom(Block):
    pass


@pytest.mark.parametrize("blocks, where", [
    ([ReLU(), BatchNorm(momentum=0.5)], "blocks[1]: BatchNorm(momentum=0.5) has no spec spelling; "
                                        "the nearest spelling 'bn' means BatchNorm()"),
    ([LayerNorm(eps=1e-3)], "blocks[0]: LayerNorm(eps=0.001) has no spec spelling"),
    ([GroupNorm(2, eps=1e-3)], "blocks[0]: GroupNorm(2, eps=0.001) has no spec spelling"),
    ([Residual(ReLU(), BatchNorm(eps=1e-3))], "blocks[0].blocks[1]: BatchNorm(eps=0.001) has no spec spelling"),
    ([_Custom()], "blocks[0]: _Custom() has no spec spelling"),
])
def test_format_refuses_blocks_the_spec_cannot_spell(blocks, where):
    with pytest.raises(ValueError) as ei:
        format_arch(blocks)
    assert str(ei.value).startswith(f"format_arch: {where}")


def test_format_refuses_no_blocks_and_non_blocks():
    with pytest.raises(ValueError, match="at least one block"):
        format_arch([])
    with pytest.raises(TypeError, match="expected a list of blocks, got str"):
        format_arch("conv32")
    with pytest.raises(TypeError, match=r"blocks\[1\]: expected a portnn block, got int"):
        format_arch([ReLU(), 3])


# --------------------------------------------------------------------------- parse errors


def parse_error(spec):
    """The three lines of a parse error: the message, the spec, the caret line."""
    with pytest.raises(ValueError) as ei:
        parse_arch(spec)
    lines = str(ei.value).split("\n")
    assert len(lines) == 3 and lines[0].startswith("arch: "), lines
    return lines


EXPECTED = ("conv<F>[x<K>][s<S>][p<P>], fc<N>, pool<K>[s<S>], avgpool<K>[s<S>], gap, bn, ln, gn<G>, relu, "
            "drop<keep>, flatten, res( ... ), resproj( ... )")


def test_unknown_block_message_and_caret():
    assert parse_error("conv32 conv3x fc10") == [
        f"arch: unknown block 'conv3x' at character 8; expected one of {EXPECTED}",
        "  conv32 conv3x fc10",
        "         ^^^^^^",
    ]


@pytest.mark.parametrize("spec, token, caret", [
    ("fc10 relux", "relux", "       ^^^^^"),
    ("conv32s2x5", "conv32s2x5", "  ^^^^^^^^^^"),     # suffixes in the grammar's order only
    ("pool-2", "pool", "  ^^^^"),                     # "-" separates: no negative numbers
    ("bn Conv32", "Conv32", "     ^^^^^^"),           # lower case
    ("drop1e-5", "drop1e", "  ^^^^^^"),               # no exponents
    ("gn", "gn", "  ^^"),
    ("relu, bn", "relu,", "  ^^^^^"),
])
def test_unknown_blocks(spec, token, caret):
    first, shown, got = parse_error(spec)
    assert first.startswith(f"arch: unknown block {token!r} at character {spec.index(token) + 1}; expected one of")
    assert shown == "  " + spec and got == caret


@pytest.mark.parametrize("spec, message, caret", [
    ("relu bn)", "unmatched ')' at character 8; no res( or resproj( is open there", "         ^"),
    ("res(relu)) fc10", "unmatched ')' at character 10;", "           ^"),
    ("conv8 res(relu res(bn)", "unmatched '(' at character 10 (of res( ... ); expected a ')' to close it",
     "           ^"),
    ("resproj(conv8s2", "unmatched '(' at character 8 (of resproj( ... )", "         ^"),
    ("relu (bn)", "unexpected '(' after 'relu' at character 6; expected a block, or res( / resproj( to open",
     "       ^"),
    ("(relu)", "unexpected '(' at character 1;", "  ^"),
    ("fc10 res", "'res' at character 6 is not followed by '('; expected res( <blocks> )", "       ^^^"),
    ("resproj relu", "'resproj' at character 1 is not followed by '('", "  ^^^^^^^"),
])
def test_unbalanced_parentheses(spec, message, caret):
    first, shown, got = parse_error(spec)
    assert first.startswith(f"arch: {message}"), first
    assert shown == "  " + spec and got == caret


@pytest.mark.parametrize("spec", ["", "   ", " - -- "])
def test_empty_spec(spec):
    first, shown, caret = parse_error(spec)
    assert first == f"arch: empty spec; expected at least one block: {EXPECTED}"
    assert shown == "  " + spec and caret == "  ^"


@pytest.mark.parametrize("spec, caret", [
    ("res()", "  ^^^^^"),
    ("relu res( ) bn", "       ^^^^^^"),
    ("res(relu resproj( - ))", "           ^^^^^^^^^^^^"),
])
def test_empty_residual(spec, caret):
    first, _, got = parse_error(spec)
    name = "resproj" if "resproj" in spec else "res"
    assert first.startswith(f"arch: empty {name}( ) at character {spec.index(name + '(') + 1}; expected at least one"
                            " block inside"), first
    assert got == caret


@pytest.mark.parametrize("spec, token, form, message", [
    ("conv0", "conv0", "conv<F>[x<K>][s<S>][p<P>]", "Conv: num_filters: expected an integer >= 1, got 0"),
    ("conv8x0", "conv8x0", "conv<F>[x<K>][s<S>][p<P>]", "Conv: filter_size: expected an integer >= 1, got 0"),
    ("bn conv8s0", "conv8s0", "conv<F>[x<K>][s<S>][p<P>]", "Conv: stride: expected an integer >= 1, got 0"),
    ("conv8x4", "conv8x4", "conv<F>[x<K>][s<S>][p<P>]", "Conv: pad=None means 'same', which needs an odd"),
    ("relu fc0", "fc0", "fc<N>", "Affine: out_dim: expected an integer >= 1, got 0"),
    ("pool0", "pool0", "pool<K>[s<S>]", "MaxPool: size: expected an integer >= 1, got 0"),
    ("avgpool2s0", "avgpool2s0", "avgpool<K>[s<S>]", "AvgPool: stride: expected an integer >= 1, got 0"),
    ("gn0", "gn0", "gn<G>", "GroupNorm: groups: expected an integer >= 1, got 0"),
    ("relu drop0", "drop0", "drop<keep>", "Dropout: keep_ratio: expected a value in (0.0, 1.0], got 0.0"),
    ("fc10 drop1.5", "drop1.5", "drop<keep>", "Dropout: keep_ratio: expected a value in (0.0, 1.0], got 1.5"),
    ("res(conv8 drop0.0)", "drop0.0", "drop<keep>", "Dropout: keep_ratio:"),
])
def test_numbers_a_block_refuses(spec, token, form, message):
    first, _, caret = parse_error(spec)
    at = spec.index(token)
    assert first.startswith(f"arch: bad block {token!r} ({form}) at character {at + 1}: {message}"), first
    assert caret == "  " + " " * at + "^" * len(token)


def test_the_caret_stays_aligned_under_tabs_and_newlines():
    _, shown, caret = parse_error("conv8\tbn\nreluu")
    assert shown == "  conv8 bn reluu" and caret == "           ^^^^^"


def test_a_spec_must_be_a_string():
    with pytest.raises(TypeError, match="arch: expected a spec string"):
        parse_arch(["conv32"])


# --------------------------------------------------------------------------- portnn train --arch
# As tests/test_cli.py runs it: a real process. Small networks, one or two epochs on digits.

SMALL = "conv8-bn-relu pool2 fc10"


def run_cli(*args, check=True, cwd=None):
    return subprocess.run([sys.executable, "-m", "portnn", *args], capture_output=True, text=True,
                          check=check, timeout=300, cwd=cwd)


def accuracies(out):
    return re.search(r"best val acc ([\d.]+)\s+test acc ([\d.]+)", out).groups()


def test_train_arch_prints_the_summary_and_trains():
    out = run_cli("train", "--arch", SMALL, "--epochs", "1").stdout
    lines = out.splitlines()
    assert re.fullmatch(r"portnn: sequential on digits \(1197 train / 300 val / 300 test\), backend \w+ \(\w+\), "
                        r"float32", lines[0]), lines[0]
    assert lines[1] == "Sequential (numpy, float32)" and out.count("Sequential (") == 1
    rows = [re.sub(r"\s+", " ", line).strip() for line in lines]
    for row in ("input (1, 8, 8)", "0 Conv(8, 3) (8, 8, 8) 80", "1 BatchNorm() (8, 8, 8) 16",
                "3 MaxPool(2) (8, 4, 4) -", "4 Affine(10) (10,) 1,290"):
        assert row in rows, out  # image-shaped data: the spec has a conv
    assert "parameters: 1,386 in 6 arrays (2 regularised); buffers: 16" in lines
    assert lines.index("Sequential (numpy, float32)") < min(i for i, s in enumerate(lines) if s.startswith("(Epoch"))
    assert float(accuracies(out)[1]) > 0.6  # 1 epoch of this net: ~0.84


def test_a_spec_without_image_blocks_gets_flat_features_and_quiet_prints_no_summary():
    out = run_cli("train", "--arch", "fc16-relu fc10", "--epochs", "1").stdout
    assert re.search(r"^\s+input\s+\(64,\)\s*$", out, re.M), out
    quiet = run_cli("train", "--arch", "fc16-relu fc10", "--epochs", "1", "--quiet").stdout
    assert "Sequential" not in quiet and "input" not in quiet and len(quiet.splitlines()) == 1


def test_the_fixed_models_print_their_summary_too():
    out = run_cli("train", "--hidden-dims", "12", "--epochs", "1").stdout.splitlines()
    assert out[1] == "FullyConnectedNet (numpy, float32)", out
    assert any(re.fullmatch(r"\S+\s+Affine\(12\)\s+\(12,\)\s+780", line) for line in out), out


def usage_lines(*args):
    res = run_cli("train", *args, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "(Epoch" not in res.stdout and "test acc" not in res.stdout
    lines = res.stderr.rstrip("\n").split("\n")
    assert lines[0] == "usage: portnn train [options]", res.stderr
    return lines[1:]


def test_arch_with_model_is_a_usage_error():
    assert usage_lines("--arch", SMALL, "--model", "cnn", "--epochs", "1") == [
        "portnn train: error: argument --model: not allowed with argument --arch (--arch is the whole network)"]


@pytest.mark.parametrize("argv, flag, model", [
    (["--hidden-dims", "10"], "--hidden-dims", "fcn"), (["--normalization", "batchnorm"], "--normalization", "fcn"),
    (["--dropout", "0.1"], "--dropout", "fcn"), (["--num-filters", "4"], "--num-filters", "cnn"),
    (["--filter-size", "5"], "--filter-size", "cnn"), (["--hidden-dim", "7"], "--hidden-dim", "cnn"),
])
def test_fixed_model_flags_are_refused_with_arch(capsys, argv, flag, model):
    with pytest.raises(SystemExit) as ei:
        main(["train", "--arch", SMALL, *argv])
    err = capsys.readouterr().err.splitlines()
    assert ei.value.code == 2 and err[-1] == (f"portnn train: error: argument {flag}: not allowed with argument "
                                              f"--arch (it applies to --model {model} only; --arch is the whole "
                                              "network)")


def test_parse_error_is_a_usage_error_with_the_caret():
    assert usage_lines("--arch", "conv32 conv3x fc10") == [
        f"portnn train: error: argument --arch: unknown block 'conv3x' at character 8; expected one of {EXPECTED}",
        "  conv32 conv3x fc10",
        "         ^^^^^^",
    ]


def test_parse_error_comes_before_the_data_is_read(capsys, tmp_path):
    # cifar10 from a folder that does not exist: the spec is refused first
    with pytest.raises(SystemExit):
        main(["train", "--arch", "res(fc10", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert "argument --arch: unmatched '('" in err and "nowhere" not in err


def test_output_size_must_be_the_class_count():
    assert usage_lines("--arch", "conv8-relu pool2 fc7") == [
        "portnn train: error: argument --arch: the network ends with 7 outputs (fc7) but digits has 10 classes; "
        "end it with fc10"]
    (line,) = usage_lines("--arch", "conv8 relu")
    assert line.startswith("portnn train: error: argument --arch: Sequential: the last block must give class scores")
    assert line.endswith("got per-sample shape (8, 8, 8); end with fc10")


def test_a_block_that_does_not_fit_is_a_usage_error_naming_it():
    (line,) = usage_lines("--arch", "conv8 pool2 pool2 pool2 pool2 fc10")
    assert line == ("portnn train: error: argument --arch: block 4 (MaxPool(2)) does not fit input shape (8, 1, 1): "
                    "the 2x2 window is larger than the input 1x1")
    (line,) = usage_lines("--arch", "res(conv8) fc10")
    assert line.startswith("portnn train: error: argument --arch: block 0 (Residual(Conv(8, 3))) does not fit")
    assert line.endswith("(use resproj( ... ) for a learned 1x1 projection)")


def test_save_then_eval_the_sequential(tmp_path):
    path = str(tmp_path / "m.npz")
    out = run_cli("train", "--arch", "conv8-bn-relu res(conv8-bn-relu) pool2 drop0.9 fc10", "--epochs", "1", "--quiet",
                  "--save", path).stdout
    _, test_acc = accuracies(out)
    manifest = json.loads(open(path + ".json").read())["meta"]
    assert manifest["model"]["class"] == "Sequential"
    assert manifest["model"]["config"]["blocks"][3]["block"] == "Residual"
    ev = run_cli("eval", path).stdout
    assert f"portnn: Sequential from {path} on digits" in ev
    # the saved (best) model scores what training reported
    assert re.search(r"^test acc ([\d.]+)\s+\(300 images\)$", ev, re.M).group(1) == test_acc, (out, ev)


def test_checkpoint_then_resume_continues_the_same_run(tmp_path):
    spec = "conv8-bn-relu res(conv8-bn) pool2 drop0.8 fc10"
    straight = run_cli("train", "--arch", spec, "--epochs", "2", "--quiet").stdout
    prefix = str(tmp_path / "run")
    run_cli("train", "--arch", spec, "--epochs", "1", "--quiet", "--checkpoint", prefix)
    meta = json.loads(open(f"{prefix}_epoch_1.npz.json").read())["meta"]
    assert meta["solver"]["metadata"]["cli"]["arch"] == "conv8 bn relu res(conv8 bn) pool2 drop0.8 fc10"
    assert meta["solver"]["metadata"]["cli"]["hidden_dims"] is None  # an --arch run sets no fcn options
    resumed = run_cli("train", "--resume", f"{prefix}_epoch_1.npz", "--epochs", "2").stdout
    assert f"resuming {prefix}_epoch_1.npz at epoch 1" in resumed.splitlines()[0]
    assert "Sequential (numpy, float32)" in resumed and "(Epoch 2 / 2)" in resumed and "(Epoch 1 /" not in resumed
    assert accuracies(resumed) == accuracies(straight)  # exactly the run that never stopped
    assert os.path.exists(f"{prefix}_epoch_2.npz")


def test_resume_compares_specs_not_their_spelling(capsys, tmp_path):
    prefix = str(tmp_path / "run")
    assert main(["train", "--arch", SMALL, "--epochs", "1", "--quiet", "--checkpoint", prefix]) == 0
    ck = f"{prefix}_epoch_1.npz"
    # the same network spelled differently is the same setting
    assert main(["train", "--resume", ck, "--arch", " conv8 bn-relu  pool2-fc10", "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    for argv, expected in (
        (["--arch", "conv8-relu pool2 fc10"], "--arch conv8 relu pool2 fc10 (checkpoint: conv8 bn relu pool2 fc10)"),
        (["--hidden-dims", "7"], f"argument --hidden-dims: not allowed with argument --arch of {ck}"),
        (["--model", "fcn"], f"argument --model: not allowed with argument --arch of {ck}"),
    ):
        with pytest.raises(SystemExit) as ei:
            main(["train", "--resume", ck, "--epochs", "3", *argv])
        err = capsys.readouterr().err
        assert ei.value.code == 2 and expected in err, err


def test_help_shows_the_grammar():
    out = run_cli("train", "--help").stdout
    assert "--arch SPEC" in out
    for spelling in ("conv<F>[x<K>][s<S>][p<P>]", "fc<N>", "pool<K>[s<S>]", "avgpool<K>[s<S>]", "gap",
                     "bn | ln | gn<G>", "relu | flatten", "drop<R>", "res( SPEC )", "resproj( SPEC )"):
        assert re.search(rf"^  {re.escape(spelling)}\s", out, re.M), spelling


def test_a_checkpoint_from_before_arch_still_resumes(capsys, tmp_path, monkeypatch):
    import portnn.cli as cli

    prefix = str(tmp_path / "old")
    with monkeypatch.context() as m:  # what 'portnn train' wrote before --arch existed
        m.setattr(cli, "_RUN_OPTIONS", tuple(k for k in cli._RUN_OPTIONS if k != "arch"))
        assert main(["train", "--hidden-dims", "8", "--epochs", "1", "--quiet", "--checkpoint", prefix]) == 0
    meta = json.loads(open(f"{prefix}_epoch_1.npz.json").read())["meta"]
    assert "arch" not in meta["solver"]["metadata"]["cli"]
    assert main(["train", "--resume", f"{prefix}_epoch_1.npz", "--epochs", "2", "--quiet"]) == 0
    assert "test acc" in capsys.readouterr().out


def test_absurd_nesting_is_a_value_error_not_a_crash():
    assert configs("res(" * 50 + "relu" + ")" * 50)[0]["block"] == "Residual"
    first, _, caret = parse_error("res(" * 3000 + "relu" + ")" * 3000)
    assert first == "arch: res( ... ) groups nested too deeply; expected a network of sensible depth"
    assert caret == "  ^^^"
