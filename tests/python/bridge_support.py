"""Shared by the bridge tests: the seqmix binary, tiny configs of every mixer, and
runs of the real program (train, logits, sample) in a temporary directory.

The binary comes from $SEQMIX_BINARY (set by ctest) or build/seqmix.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

SEQMIX = os.environ.get("SEQMIX_BINARY", os.path.join(ROOT, "build", "seqmix"))

# Tiny models that together use every model option: both norms, with and without the
# MLP, learned positions or none, tied and untied heads, several heads, H3 with
# head_dim 2, Mamba's dt_rank auto. Sequences of 300 tokens must fit the positions.
MODELS = {
    "attention": """
  norm: layernorm
  mlp: gelu
  max_position_embeddings: 320
  tie_embeddings: false
  mixer: {type: attention, num_heads: 2}""",
    "linear_attention": """
  norm: rmsnorm
  mlp: none
  tie_embeddings: true
  mixer: {type: linear_attention, num_heads: 2}""",
    "gla": """
  norm: layernorm
  mlp: gelu
  tie_embeddings: true
  mixer: {type: gla, num_heads: 2, expand_k: 0.5, expand_v: 1.0, gate_low_rank_dim: 8}""",
    "h3": """
  norm: rmsnorm
  mlp: gelu
  tie_embeddings: false
  mixer: {type: h3, d_state: 8, head_dim: 2}""",
    "mamba": """
  norm: layernorm
  mlp: none
  max_position_embeddings: 320
  tie_embeddings: true
  mixer: {type: mamba, d_state: 8, d_conv: 4, expand: 2, dt_rank: auto}""",
}

VOCAB = 64

RECALL_DATA = """
data: {kind: recall, task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, num_train_examples: 256,
       num_test_examples: 32, seed: 3}"""

TRAINING = """
optimizer: {lr: 0.01}
training: {steps: 10, batch_size: 8, eval_interval: 10, eval_batches: 2, seed: 1}
logging: {log_interval: 10, level: warn}
"""


def config_text(mixer, d_model=16, data=RECALL_DATA, vocab=VOCAB, extra_model=""):
    return (f"model:\n  vocab_size: {vocab}\n  d_model: {d_model}\n  n_layers: 2{MODELS[mixer]}{extra_model}\n"
            f"{data}\n{TRAINING}")


def run(*args, check=True):
    """Runs seqmix with OMP_NUM_THREADS=2 unless set; returns (exit code, stdout, stderr)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    p = subprocess.run([SEQMIX, *map(str, args)], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"seqmix {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
    return p.returncode, p.stdout, p.stderr


def seqmix_logits(checkpoint, tokens, recurrent=False):
    """(L, V) float32 logits from `seqmix logits`, read back from its .npy."""
    with tempfile.TemporaryDirectory() as d:
        ids = os.path.join(d, "tokens.txt")
        with open(ids, "w") as f:
            f.write(" ".join(map(str, tokens)))
        out = os.path.join(d, "logits.npy")
        run("logits", checkpoint, "--tokens-file", ids, "--npy", out, *(["--recurrent"] if recurrent else []))
        return np.load(out)


def assert_close(test, got, want, rel=1e-4, what="logits"):
    """|got - want| <= rel * max|want| everywhere: 1e-4 relative to the logits' scale."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    test.assertEqual(got.shape, want.shape, what)
    err, scale = np.abs(got - want).max(), np.abs(want).max()
    test.assertLessEqual(err, rel * scale, f"{what}: max abs difference {err:.3g}, logits up to {scale:.3g}")


class SeqmixTestCase(unittest.TestCase):
    """A temporary directory per test class, removed at the end."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(SEQMIX):
            raise unittest.SkipTest(f"no seqmix binary at {SEQMIX} (build it, or set SEQMIX_BINARY)")
        cls.dir = tempfile.mkdtemp(prefix="seqmix_bridge_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def train(cls, name, text, *extra):
        """Trains a run from config text; returns its checkpoint path."""
        cfg = os.path.join(cls.dir, name + ".yaml")
        with open(cfg, "w") as f:
            f.write(text)
        out = os.path.join(cls.dir, name)
        run("train", cfg, "--out", out, *extra)
        return os.path.join(out, "checkpoint.h5")

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path


def json_of(stdout):
    return json.loads(stdout)
