"""Checkpoints between seqmix and PyTorch: `seqmix train --init-from` with weights
saved by PyTorch, refusals naming the tensor at fault (in seqmix and in the bridge),
and the tokenizer a text checkpoint carries."""

import os
import shutil

import h5py
import numpy as np
import torch
from torch import nn

import bridge_support as bs
import seqmix_torch

torch.set_num_threads(1)


def params_of(path):
    with h5py.File(path, "r") as f:
        return {k: d[()] for k, d in f["params"].items()}


class InitFrom(bs.SeqmixTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cfg_text = bs.config_text("linear_attention")
        cls.cfg = cls.write("la.yaml", cls.cfg_text)
        cls.ckpt = cls.train("la", cls.cfg_text)

    def test_weights_edited_in_torch_start_a_seqmix_run_with_a_fresh_optimizer(self):
        model = seqmix_torch.load(self.ckpt)
        with torch.no_grad():
            model.layers[1].mixer.v_proj.weight.mul_(-3.0)
            model.norm_f.weight.add_(0.5)
        edited = os.path.join(self.dir, "edited.h5")
        seqmix_torch.save(model, edited)
        # One step at a negligible learning rate: the run must start from the edited weights.
        out = os.path.join(self.dir, "from_edited")
        bs.run("train", self.cfg, "--init-from", edited, "--out", out, "--set", "training.steps=1",
               "--set", "optimizer.lr=1e-9")
        start, after = params_of(edited), params_of(os.path.join(out, "checkpoint.h5"))
        self.assertEqual(set(start), set(after))
        for name in start:
            np.testing.assert_allclose(after[name], start[name], rtol=0, atol=1e-6, err_msg=name)
        # Without --init-from the same run starts elsewhere.
        fresh = os.path.join(self.dir, "fresh")
        bs.run("train", self.cfg, "--out", fresh, "--set", "training.steps=1", "--set", "optimizer.lr=1e-9")
        far = params_of(os.path.join(fresh, "checkpoint.h5"))
        self.assertGreater(np.abs(far["layers.1.mixer.v_proj.weight"] - start["layers.1.mixer.v_proj.weight"]).max(),
                           1e-2)

    def test_init_from_a_seqmix_checkpoint_takes_weights_not_optimizer_state(self):
        out = os.path.join(self.dir, "from_seqmix")
        bs.run("train", self.cfg, "--init-from", self.ckpt, "--out", out, "--set", "training.steps=2")
        with h5py.File(self.ckpt, "r") as a, h5py.File(os.path.join(out, "checkpoint.h5"), "r") as b:
            self.assertEqual(int(a["optimizer/step"][()]), 10)
            self.assertEqual(int(b["optimizer/step"][()]), 2)  # a fresh optimizer, two steps
            self.assertEqual(int(b["train/step"][()]), 2)

    def test_mismatched_shapes_are_refused_with_the_tensor_name(self):
        wide = self.write("wide.yaml", self.cfg_text.replace("d_model: 16", "d_model: 24"))
        code, out, err = bs.run("train", wide, "--init-from", self.ckpt, "--out", os.path.join(self.dir, "w"),
                                check=False)
        self.assertEqual(code, 1, out + err)
        self.assertIn("embeddings.word_embeddings.weight has shape (64, 16), the model expects (64, 24)", err)
        self.assertIn(self.ckpt, err)

    def test_missing_and_extra_tensors_are_refused_with_the_tensor_name(self):
        with_mlp = self.write("mlp.yaml", self.cfg_text.replace("mlp: none", "mlp: gelu"))
        code, _, err = bs.run("train", with_mlp, "--init-from", self.ckpt, "--out", os.path.join(self.dir, "m"),
                              check=False)
        self.assertEqual(code, 1)
        self.assertIn("layers.0.norm2.weight is missing", err)
        # The other way round: a checkpoint with an MLP into a config without one.
        mlp_ckpt = self.train("la_mlp", self.cfg_text.replace("mlp: none", "mlp: gelu"))
        code, _, err = bs.run("train", self.cfg, "--init-from", mlp_ckpt, "--out", os.path.join(self.dir, "n"),
                              check=False)
        self.assertEqual(code, 1)
        self.assertIn("layers.0.mlp.fc1.bias does not belong to this model", err)

    def test_init_from_and_resume_exclude_each_other(self):
        code, _, err = bs.run("train", "--resume", os.path.dirname(self.ckpt), "--init-from", self.ckpt, check=False)
        self.assertEqual(code, 1)
        self.assertIn("--init-from", err)


class Refusals(bs.SeqmixTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cfg_text = bs.config_text("attention")
        cls.ckpt = cls.train("att", cls.cfg_text)

    def test_save_refuses_a_model_that_is_not_the_configs(self):
        model = seqmix_torch.load(self.ckpt)
        target = os.path.join(self.dir, "x.h5")
        with self.assertRaisesRegex(seqmix_torch.CheckpointError,
                                    r"embeddings.word_embeddings.weight has shape \(64, 16\).*expects \(64, 24\)"):
            seqmix_torch.save(model, target, config=self.cfg_text.replace("d_model: 16", "d_model: 24"))
        model.layers[0].mixer.out_proj = nn.Linear(16, 16, bias=False)
        with self.assertRaisesRegex(seqmix_torch.CheckpointError, r"layers.0.mixer.out_proj.bias .* is missing"):
            seqmix_torch.save(model, target)
        self.assertFalse(os.path.exists(target))

    def test_load_refuses_a_checkpoint_whose_tensors_disagree_with_its_config(self):
        bad = os.path.join(self.dir, "bad.h5")
        shutil.copy(self.ckpt, bad)
        with h5py.File(bad, "r+") as f:
            del f["params/layers.1.mixer.Wqkv.bias"]
            f["params/layers.1.mixer.Wqkv.bias"] = np.zeros(47, np.float32)
        with self.assertRaisesRegex(seqmix_torch.CheckpointError,
                                    r"bad.h5: tensor layers.1.mixer.Wqkv.bias has shape \(47,\)"):
            seqmix_torch.load(bad)

    def test_load_refuses_a_newer_format_and_a_file_that_is_not_hdf5(self):
        newer = os.path.join(self.dir, "newer.h5")
        shutil.copy(self.ckpt, newer)
        with h5py.File(newer, "r+") as f:
            f.attrs["format_version"] = np.int64(2)
        with self.assertRaisesRegex(seqmix_torch.CheckpointError, "format_version 2 is newer"):
            seqmix_torch.load(newer)
        junk = self.write("junk.h5", "not a checkpoint")
        with self.assertRaisesRegex(seqmix_torch.CheckpointError, "junk.h5: not an HDF5 file"):
            seqmix_torch.load(junk)


CORPUS = ("First Citizen: Before we proceed any further, hear me speak. — Café au lait, naïve façade! "
          "All: Speak, speak. You are all resolved rather to die than to famish? ") * 12


class TextTokenizer(bs.SeqmixTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        corpus = cls.write("corpus.txt", CORPUS)
        data = f"\ndata: {{kind: text, path: {corpus}, tokenizer: char, seq_len: 32}}"
        cls.ckpt = cls.train("text", bs.config_text("gla", data=data))
        cls.model = seqmix_torch.load(os.path.dirname(cls.ckpt))  # a run directory loads too

    def test_the_char_tokenizer_of_the_checkpoint(self):
        tok = self.model.tokenizer
        self.assertEqual(tok.kind, "char")
        self.assertEqual(tok.vocabulary, "".join(sorted(set(CORPUS))))
        text = "Café — speak!"
        ids = tok.encode(text)
        self.assertEqual(len(ids), len(text))
        self.assertEqual(tok.decode(ids), text)
        with self.assertRaisesRegex(ValueError, r"'Z' \(U\+005A\) at position 3"):
            tok.encode("CafZ")

    def test_text_logits_and_greedy_text_equal_seqmix(self):
        prompt = "Before we proceed, naïve "
        ids = self.model.tokenizer.encode(prompt)
        _, out, _ = bs.run("logits", self.ckpt, "--text", prompt)
        with torch.no_grad():
            got = self.model(torch.tensor(ids)).numpy()
        bs.assert_close(self, got, np.array(bs.json_of(out)["logits"], np.float32))
        _, out, _ = bs.run("sample", self.ckpt, "--prompt", prompt, "--max-new-tokens", 30, "--temperature", 0)
        generated = self.model.tokenizer.decode(self.model.generate(ids, 30, temperature=0))
        self.assertEqual(out, prompt + generated + "\n")

    def test_init_from_refuses_a_checkpoint_whose_tokenizer_differs_from_the_corpus(self):
        other = self.write("other.txt", CORPUS + "XYZ")
        data = f"\ndata: {{kind: text, path: {other}, tokenizer: char, seq_len: 32}}"
        cfg = self.write("other.yaml", bs.config_text("gla", data=data))
        code, _, err = bs.run("train", cfg, "--init-from", os.path.dirname(self.ckpt) + "/checkpoint.h5",
                              "--out", os.path.join(self.dir, "other"), check=False)
        self.assertEqual(code, 1)
        self.assertIn("its tokenizer (char) differs from the one of CONFIG's corpus", err)

    def test_the_tokenizer_survives_save(self):
        saved = os.path.join(self.dir, "saved.h5")
        seqmix_torch.save(self.model, saved)
        with h5py.File(self.ckpt, "r") as a, h5py.File(saved, "r") as b:
            self.assertEqual(a["tokenizer"][()], b["tokenizer"][()])
            self.assertEqual(a["tokenizer"].attrs["kind"], b["tokenizer"].attrs["kind"])
        args = ("--prompt", "Speak, ", "--max-new-tokens", 20, "--temperature", 0)
        self.assertEqual(bs.run("sample", saved, *args)[1], bs.run("sample", self.ckpt, *args)[1])


class BuiltInTorch(bs.SeqmixTestCase):
    def test_a_model_built_in_torch_with_a_byte_tokenizer_runs_in_seqmix(self):
        cfg = bs.config_text("mamba", vocab=256, data="\ndata: {kind: text, path: unused.txt, tokenizer: byte}")
        torch.manual_seed(0)
        model = seqmix_torch.build(cfg, tokenizer=seqmix_torch.Tokenizer("byte"))
        path = os.path.join(self.dir, "byte.h5")
        seqmix_torch.save(model, path)
        text = "héllo, wörld"
        ids = model.tokenizer.encode(text)
        self.assertEqual(len(ids), len(text.encode("utf-8")))
        _, out, _ = bs.run("logits", path, "--text", text)
        with torch.no_grad():
            want = model(torch.tensor(ids)).numpy()
        bs.assert_close(self, np.array(bs.json_of(out)["logits"], np.float32), want)
        back = seqmix_torch.load(path)
        self.assertEqual(back.tokenizer.kind, "byte")
        self.assertEqual(back.tokenizer.decode(ids), text)
