"""A compact text spelling of a network: ``"conv32-bn-relu pool2 conv64-bn-relu gap fc10"``.

``parse_arch(spec) -> list of blocks`` (portnn.blocks, for ``portnn.Sequential``) and
``format_arch(blocks) -> spec``, its inverse: ``parse_arch(format_arch(b))`` gives blocks
with the same ``config()``. ``portnn train --arch SPEC`` uses them.

Grammar::

    spec  := item (sep item)*          sep: whitespace and/or "-" (both only separate tokens)
    item  := block | "res(" spec ")" | "resproj(" spec ")"
             -> Residual(*blocks) / Residual(*blocks, projection=True); nesting allowed;
                "(" and ")" may have spaces around them
    block := "conv" F ["x" K] ["s" S] ["p" P]  Conv(F, K (3 if omitted), stride=S (1), pad=P (None: "same"))
           | "fc" N                            Affine(N)
           | "pool" K ["s" S]                  MaxPool(K, S or None)
           | "avgpool" K ["s" S]               AvgPool(K, S or None)
           | "gap"                             GlobalAvgPool()
           | "bn" | "ln" | "gn" G              BatchNorm() / LayerNorm() / GroupNorm(G)
           | "relu"                            ReLU()
           | "drop" R                          Dropout(R), R the KEEP ratio, 0 < R <= 1 (drop0.5)
           | "flatten"                         Flatten()

F, K, S, N and G are decimal integers >= 1, P an integer >= 0, R a decimal number
(``0.5``, ``.5``, ``1``); no exponents. Names are lower case and the suffixes come in
the order shown (``conv32x5s2p1``). Examples: ``conv32x5s2`` = Conv(32, 5, stride=2);
``res(conv32-bn-relu conv32-bn) relu``; ``resproj(conv64s2-bn-relu conv64-bn)``.

Errors are ValueErrors whose first line names the offending token, its position
(1-based character) and what was expected; the next two lines show the spec and a
caret under the token::

    arch: unknown block 'conv3x' at character 8; expected one of conv<F>[x<K>][s<S>][p<P>], ...
      conv32 conv3x fc10
             ^^^^^^

A value a block refuses (``drop1.5``, ``conv0``, an even filter without ``p``) carries
the block's own message (``Dropout: keep_ratio: ...``). Whether the blocks fit an input
shape is decided later, by the model that builds them.
"""

from __future__ import annotations

import decimal
import re

from .blocks import (
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
    block_from_config,
)

__all__ = ["parse_arch", "format_arch", "HELP"]

# The user's table of spellings (``portnn train --help`` shows it).
HELP = """\
--arch SPEC: blocks applied in turn, separated by spaces and/or "-":
  conv<F>[x<K>][s<S>][p<P>]  Conv(F, K, stride=S, pad=P); K=3, S=1, P="same" when omitted
  fc<N>                      Affine(N): fully connected, N outputs
  pool<K>[s<S>]              MaxPool(K, stride=S); S=K when omitted
  avgpool<K>[s<S>]           AvgPool(K, stride=S)
  gap                        GlobalAvgPool(): (C, H, W) -> (C,)
  bn | ln | gn<G>            BatchNorm() / LayerNorm() / GroupNorm(G groups)
  relu | flatten             ReLU() / Flatten()
  drop<R>                    Dropout(R), R the KEEP ratio in (0, 1], e.g. drop0.5
  res( SPEC )                Residual: x + f(x), f the blocks inside (nesting allowed)
  resproj( SPEC )            the same with a learned 1x1 projection of x when f changes its shape
F, K, S, N, G: integers >= 1; P: an integer >= 0. The network gets images (C, H, W) when the
spec holds a conv, pool, avgpool, gap or gn block, flattened features otherwise, and must end
with one score per class (e.g. fc10). Weights: He init, or N(0, s^2) with --weight-scale s.
Example: --arch "conv32-bn-relu conv32-bn-relu pool2 conv64-bn-relu gap fc10\""""

_INT = r"(\d+)"
_DECIMAL = r"(\d+(?:\.\d*)?|\.\d+)"


def _int(text, omitted=None):
    return omitted if text is None else int(text)


# (how the help writes it, pattern of the whole token, constructor from the pattern's groups)
_BLOCKS = (
    ("conv<F>[x<K>][s<S>][p<P>]", rf"conv{_INT}(?:x{_INT})?(?:s{_INT})?(?:p{_INT})?",
     lambda f, k, s, p: Conv(int(f), _int(k, 3), stride=_int(s, 1), pad=_int(p))),
    ("fc<N>", rf"fc{_INT}", lambda n: Affine(int(n))),
    ("pool<K>[s<S>]", rf"pool{_INT}(?:s{_INT})?", lambda k, s: MaxPool(int(k), _int(s))),
    ("avgpool<K>[s<S>]", rf"avgpool{_INT}(?:s{_INT})?", lambda k, s: AvgPool(int(k), _int(s))),
    ("gap", "gap", GlobalAvgPool),
    ("bn", "bn", BatchNorm),
    ("ln", "ln", LayerNorm),
    ("gn<G>", rf"gn{_INT}", lambda g: GroupNorm(int(g))),
    ("relu", "relu", ReLU),
    ("drop<keep>", rf"drop{_DECIMAL}", lambda r: Dropout(float(r))),
    ("flatten", "flatten", Flatten),
)
_PATTERNS = [(form, re.compile(pattern, re.ASCII), make) for form, pattern, make in _BLOCKS]
_EXPECTED = ", ".join([form for form, _, _ in _BLOCKS] + ["res( ... )", "resproj( ... )"])
_GROUPS = {"res": False, "resproj": True}  # name -> Residual's projection


# --------------------------------------------------------------------------- errors


def _fail(spec, start, length, message):
    """The ValueError of a bad spec: the message, then the spec with ``^`` under
    characters [start, start + length)."""
    # Tabs and newlines would break the caret's alignment: show every blank as one space.
    shown = "".join(" " if c.isspace() else c for c in spec)
    raise ValueError(f"arch: {message}\n  {shown}\n  {' ' * start}{'^' * max(length, 1)}")


# --------------------------------------------------------------------------- parsing


def _tokens(spec):
    """(text, start) of each token: a word (a run of characters that are not blanks,
    "-" or parentheses), "(" or ")"."""
    return [(m.group(0), m.start()) for m in re.finditer(r"[()]|[^\s()\-]+", spec)]


def parse_arch(spec: str) -> list[Block]:
    """The blocks that ``spec`` spells (grammar: this module's docstring).

    spec : str, e.g. "conv32-bn-relu pool2 gap fc10"
    Returns a list of portnn.blocks objects, unbuilt (``Sequential(parse_arch(spec), input_dim)``).
    Raises TypeError for a non-string, ValueError (token, position, caret) for a bad spec.
    """
    if not isinstance(spec, str):
        raise TypeError(f"arch: expected a spec string such as 'conv32-bn-relu gap fc10', got {type(spec).__name__}")
    tokens = _tokens(spec)
    if not tokens:
        _fail(spec, 0, 1, f"empty spec; expected at least one block: {_EXPECTED}")
    try:
        return _parse_items(spec, tokens, 0, None)[0]
    except RecursionError:  # thousands of nested res( (the parser recurses once per group)
        _fail(spec, tokens[0][1], len(tokens[0][0]),
              "res( ... ) groups nested too deeply; expected a network of sensible depth")


def _parse_items(spec, tokens, i, opening):
    """Items from tokens[i] up to the ")" that closes ``opening`` (the token index of
    its "(", None at the top level) -> (blocks, index after that ")")."""
    blocks = []
    while i < len(tokens):
        text, start = tokens[i]
        if text == ")":
            if opening is None:
                _fail(spec, start, 1, f"unmatched ')' at character {start + 1}; no res( or resproj( is open there")
            return blocks, i + 1
        if text == "(":
            after = f" after {tokens[i - 1][0]!r}" if i and tokens[i - 1][0] != "(" else ""
            _fail(spec, start, 1, f"unexpected '('{after} at character {start + 1}; expected a block, "
                                  "or res( / resproj( to open a residual group")
        if text in _GROUPS:
            block, i = _parse_group(spec, tokens, i)
        else:
            block, i = _parse_block(spec, text, start), i + 1
        blocks.append(block)
    if opening is not None:
        start = tokens[opening][1]
        _fail(spec, start, 1, f"unmatched '(' at character {start + 1} (of {tokens[opening - 1][0]}( ... ); "
                              "expected a ')' to close it")
    return blocks, i


def _parse_group(spec, tokens, i):
    """res( spec ) / resproj( spec ) starting at tokens[i] -> (Residual, index after its ")")."""
    name, start = tokens[i]
    if i + 1 == len(tokens) or tokens[i + 1][0] != "(":
        _fail(spec, start, len(name), f"{name!r} at character {start + 1} is not followed by '('; "
                                      f"expected {name}( <blocks> )")
    inner, after = _parse_items(spec, tokens, i + 2, i + 1)
    if not inner:
        close = tokens[after - 1][1]
        _fail(spec, start, close + 1 - start, f"empty {name}( ) at character {start + 1}; expected at least "
                                              f"one block inside, e.g. {name}(conv32-bn-relu conv32-bn)")
    return Residual(*inner, projection=_GROUPS[name]), after


def _parse_block(spec, text, start):
    for form, pattern, make in _PATTERNS:
        m = pattern.fullmatch(text)
        if m:
            try:
                return make(*m.groups())
            except ValueError as e:  # a number the block refuses: its own message, in the spec's place
                _fail(spec, start, len(text), f"bad block {text!r} ({form}) at character {start + 1}: {e}")
    _fail(spec, start, len(text), f"unknown block {text!r} at character {start + 1}; expected one of {_EXPECTED}")


# --------------------------------------------------------------------------- formatting


def format_arch(blocks) -> str:
    """The spec of ``blocks`` (Block objects or their ``config()`` dicts), blocks
    separated by spaces: ``[Conv(32, 5, stride=2), ReLU(), Affine(10)]`` -> "conv32x5s2 relu fc10".

    Raises ValueError for a block the spec cannot spell (BatchNorm(momentum=0.5), any
    non-default eps, a Block subclass of your own), TypeError for a non-block.
    """
    if isinstance(blocks, (str, bytes, dict, Block)) or not hasattr(blocks, "__iter__"):
        raise TypeError(f"format_arch: blocks: expected a list of blocks, got {type(blocks).__name__}")
    items = [_spell(b, f"blocks[{i}]") for i, b in enumerate(blocks)]
    if not items:
        raise ValueError("format_arch: blocks: expected at least one block (an empty spec means no network)")
    return " ".join(items)


def _spell(block, where):
    if isinstance(block, dict):
        block = block_from_config(block, f"format_arch: {where}")
    if not isinstance(block, Block):
        raise TypeError(f"format_arch: {where}: expected a portnn block, got {type(block).__name__}")
    if type(block) is Residual:
        inner = " ".join(_spell(b, f"{where}.blocks[{i}]") for i, b in enumerate(block.blocks))
        return f"{'resproj' if block.projection else 'res'}({inner})"
    text = _spelling(block)
    # The spec has no words for some arguments (momentum, eps): check that the
    # spelling means this very block rather than listing which arguments it covers.
    back = _parse_block(text, text, 0) if text is not None else None
    if back is None or back.config() != block.config():
        means = f"; the nearest spelling {text!r} means {back!r}" if back is not None else ""
        raise ValueError(f"format_arch: {where}: {block!r} has no spec spelling{means}")
    return text


def _spelling(block):
    """The spec word for ``block``'s arguments that the grammar covers (None: no word)."""
    kind = type(block)
    if kind is Conv:
        return (f"conv{block.num_filters}" + (f"x{block.filter_size}" if block.filter_size != 3 else "")
                + (f"s{block.stride}" if block.stride != 1 else "")
                + (f"p{block.pad_arg}" if block.pad_arg is not None else ""))
    if kind in (MaxPool, AvgPool):
        stride = f"s{block.stride_arg}" if block.stride_arg is not None else ""
        return f"{'pool' if kind is MaxPool else 'avgpool'}{block.size}{stride}"
    if kind is Dropout:
        # Positional notation of the shortest repr (1e-05 -> 0.00001): the grammar has no exponents.
        return f"drop{decimal.Decimal(repr(block.keep_ratio)):f}"
    if kind is Affine:
        return f"fc{block.out_dim}"
    if kind is GroupNorm:
        return f"gn{block.groups}"
    return _WORDS.get(kind)


_WORDS = {GlobalAvgPool: "gap", BatchNorm: "bn", LayerNorm: "ln", ReLU: "relu", Flatten: "flatten"}
