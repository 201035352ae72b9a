"""Editing checkpoint files by hand in tests: the manifest lives inside the .npz
(portnn.checkpoint_file), so a test that plays a hand-edited or foreign file rewrites it there."""

import json

import numpy as np

from portnn.checkpoint_file import MANIFEST_KEY


def read_manifest(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(bytes(z[MANIFEST_KEY]).decode())


def rewrite_manifest(path, edit=None, raw=None):
    """Replace the manifest inside ``path`` by ``edit(manifest)`` (a dict) or by the bytes ``raw``."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if raw is None:
        manifest = json.loads(bytes(arrays[MANIFEST_KEY]).decode())
        out = edit(manifest)
        raw = json.dumps(out if isinstance(out, dict) else manifest).encode()
    arrays[MANIFEST_KEY] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(path, **arrays)


def drop_manifest(path):
    """The same arrays without any manifest: what a file portnn did not write looks like."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != MANIFEST_KEY}
    np.savez(path, **arrays)
