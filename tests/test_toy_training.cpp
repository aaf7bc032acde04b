// The foundation end to end: an embedding + MLP + cross-entropy model built from
// core ops, trained through the tape and AdamW on a fixed toy sequence task
// (next token of a fixed permutation), reaches near-zero loss.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "core/tape.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "tests/support/gradcheck.h"

using namespace seqmix;

namespace {

TEST(ToyTraining, EmbeddingMlpCrossEntropyReachesNearZeroLoss) {
  const int64_t V = 23, D = 16, H = 32, B = 8, L = 12;
  Generator g(42);
  auto param = [&](const Shape& s, double std) {
    Tensor t = Tensor::empty(s);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(std * g.normal());
    t.set_requires_grad(true);
    return t;
  };
  Tensor emb = param({V, D}, 0.3), w1 = param({H, D}, 0.3), b1 = param({H}, 0.0), w2 = param({V, H}, 0.3),
         b2 = param({V}, 0.0);
  NamedTensors params = {{"emb.weight", emb}, {"fc1.weight", w1}, {"fc1.bias", b1}, {"fc2.weight", w2}, {"fc2.bias", b2}};
  Adam opt(params, AdamOptions{true, 0.9, 0.99, 1e-8, 0.01});
  LrSchedule sched{"cosine", 1e-2, 1e-3, 20, 300};
  // The task: the label of token x is perm[x], a fixed permutation of [0, V).
  std::vector<int32_t> perm(V);
  for (int64_t i = 0; i < V; ++i) perm[i] = static_cast<int32_t>((7 * i + 3) % V);
  double loss = 0;
  for (int64_t step = 0; step < 300; ++step) {
    std::vector<int32_t> x(B * L), y(B * L);
    for (int64_t i = 0; i < B * L; ++i) {
      x[i] = static_cast<int32_t>(g.randint(0, V));
      y[i] = perm[x[i]];
    }
    y[5] = kIgnoreLabel;  // ignored positions do not count
    Tensor tokens = Tensor::from_vector({B, L}, x), labels = Tensor::from_vector({B, L}, y);
    Tensor logits = linear(gelu(linear(embedding(tokens, emb), w1, b1)), w2, b2);
    Tensor l = cross_entropy(logits, labels);
    loss = l.item();
    backward(l);
    clip_grad_norm(params, 1.0);
    opt.step(sched.at(step));
    opt.zero_grad();
    EXPECT_EQ(tape().size(), 0u);  // backward released the step's tape
  }
  EXPECT_LT(loss, 0.02);
}

}  // namespace
