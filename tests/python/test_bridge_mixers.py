"""For every mixer: a tiny model trained a few steps by seqmix, loaded by seqmix_torch.

- logits equal seqmix's (`seqmix logits`) within 1e-4 relative, up to 300 tokens, in a batch;
- the PyTorch recurrent form equals the PyTorch parallel form, and seqmix's recurrent form;
- greedy generation equals `seqmix sample --temperature 0`;
- seqmix -> PyTorch -> seqmix leaves every tensor bit-identical (and seqmix's logits and eval);
- a weight edited in PyTorch shows up in seqmix's logits.
"""

import os
import unittest

import h5py
import numpy as np
import torch

import bridge_support as bs
import seqmix_torch

torch.set_num_threads(1)  # tiny tensors: threads cost more than they give


class MixerBridge(bs.SeqmixTestCase):
    mixer = None  # set by the subclasses below

    @classmethod
    def setUpClass(cls):
        if cls.mixer is None:
            raise unittest.SkipTest("the base class of the five mixer cases")
        super().setUpClass()
        cls.ckpt = cls.train(cls.mixer, bs.config_text(cls.mixer))
        cls.model = seqmix_torch.load(cls.ckpt)

    def tokens(self, L, seed):
        return np.random.default_rng(seed).integers(0, bs.VOCAB, L).tolist()

    def torch_recurrent(self, model, tokens):
        state = model.init_state(1)
        with torch.no_grad():
            return np.stack([model.step(state, torch.tensor([t]))[0].numpy() for t in tokens])

    def test_loaded_model_has_the_checkpoint_names_and_float32(self):
        with h5py.File(self.ckpt, "r") as f:
            stored = {k: d.shape for k, d in f["params"].items()}
        params = dict(self.model.named_parameters())
        self.assertEqual(set(params), set(stored))
        for name, p in params.items():
            self.assertEqual(tuple(p.shape), stored[name], name)
            self.assertEqual(p.dtype, torch.float32, name)

    def test_logits_equal_seqmix_up_to_300_tokens(self):
        for L in (1, 65, 300):
            a, b = self.tokens(L, L), self.tokens(L, L + 1)
            with torch.no_grad():
                got = self.model(torch.tensor([a, b])).numpy()  # a batch of two
            self.assertEqual(got.shape, (2, L, bs.VOCAB))
            bs.assert_close(self, got[0], bs.seqmix_logits(self.ckpt, a), what=f"{self.mixer} L={L} row 0")
            bs.assert_close(self, got[1], bs.seqmix_logits(self.ckpt, b), what=f"{self.mixer} L={L} row 1")

    def test_recurrent_form_equals_parallel_form(self):
        toks = self.tokens(300, 7)
        with torch.no_grad():
            parallel = self.model(torch.tensor(toks)).numpy()
        bs.assert_close(self, self.torch_recurrent(self.model, toks), parallel, what=f"{self.mixer} recurrent")
        bs.assert_close(self, bs.seqmix_logits(self.ckpt, toks, recurrent=True), parallel,
                        what=f"{self.mixer} seqmix recurrent")

    def test_greedy_generation_equals_seqmix_sample(self):
        prompt = self.tokens(12, 11)
        _, out, _ = bs.run("sample", self.ckpt, "--prompt", " ".join(map(str, prompt)), "--max-new-tokens", 24,
                           "--temperature", 0)
        want = [int(t) for t in out.split()]
        self.assertEqual(len(want), 24)
        self.assertEqual(self.model.generate(prompt, 24, temperature=0), want)

    def test_round_trip_seqmix_torch_seqmix_is_bit_identical(self):
        saved = os.path.join(self.dir, "round_trip.h5")
        seqmix_torch.save(seqmix_torch.load(self.ckpt), saved)
        with h5py.File(self.ckpt, "r") as a, h5py.File(saved, "r") as b:
            self.assertEqual(set(a["params"]), set(b["params"]))
            for name in a["params"]:
                x, y = a["params"][name][()], b["params"][name][()]
                self.assertEqual(x.dtype, y.dtype, name)
                self.assertEqual(x.tobytes(), y.tobytes(), f"{name} changed in the round trip")
            self.assertEqual(a.attrs["config"], b.attrs["config"])
        # seqmix reads it: the same logits to the bit, the same evaluation.
        toks = self.tokens(50, 3)
        np.testing.assert_array_equal(bs.seqmix_logits(saved, toks), bs.seqmix_logits(self.ckpt, toks))
        ev_a = bs.json_of(bs.run("eval", self.ckpt)[1])
        ev_b = bs.json_of(bs.run("eval", saved)[1])
        self.assertEqual((ev_a["loss"], ev_a["accuracy"]), (ev_b["loss"], ev_b["accuracy"]))

    def test_loaded_model_trains_in_torch(self):
        """Every parameter gets a finite gradient, and a few Adam steps lower the loss on a batch."""
        model = seqmix_torch.load(self.ckpt).train()
        toks = torch.tensor([self.tokens(80, 17), self.tokens(80, 19)])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(5):
            logits = model(toks[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, bs.VOCAB), toks[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            for name, p in model.named_parameters():
                self.assertIsNotNone(p.grad, name)
                self.assertTrue(torch.isfinite(p.grad).all(), name)
            opt.step()
            losses.append(loss.item())
        self.assertLess(losses[-1], losses[0])

    def test_weight_edited_in_torch_shows_up_in_seqmix(self):
        model = seqmix_torch.load(self.ckpt)
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("layers.0.mixer."):
                    p.add_(torch.randn(p.shape, generator=gen) * (p.abs().mean() + 0.05))
        edited = os.path.join(self.dir, "edited.h5")
        seqmix_torch.save(model, edited)
        toks = self.tokens(100, 13)
        with torch.no_grad():
            want = model(torch.tensor(toks)).numpy()
        got, before = bs.seqmix_logits(edited, toks), bs.seqmix_logits(self.ckpt, toks)
        bs.assert_close(self, got, want, what=f"{self.mixer} edited")
        # The edit moves the logits by far more than the tolerance of the comparison above.
        self.assertGreater(np.abs(got - before).max(), 20 * 1e-4 * np.abs(before).max(),
                           "the edit did not change seqmix's logits")


def _mixer_case(name):
    return type(f"{''.join(w.title() for w in name.split('_'))}Bridge", (MixerBridge,), {"mixer": name})


AttentionBridge = _mixer_case("attention")
LinearAttentionBridge = _mixer_case("linear_attention")
GlaBridge = _mixer_case("gla")
H3Bridge = _mixer_case("h3")
MambaBridge = _mixer_case("mamba")

