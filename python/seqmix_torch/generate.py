"""Autoregressive decoding through the recurrent form, as `seqmix sample`."""

import torch


@torch.no_grad()
def generate(model, prompt, max_new_tokens, temperature=1.0, top_k=0, generator=None):
    """Feeds the prompt (a list or 1-D tensor of ids) one token at a time, then draws
    max_new_tokens tokens, each fed back. temperature 0 is greedy (the first maximum,
    as seqmix), otherwise softmax(logits / temperature) over the top_k most likely
    tokens (0: all of them), drawn with `generator` (a torch.Generator). Returns the
    new token ids as a list. Sampled tokens need not equal seqmix's (another RNG);
    greedy ones do."""
    prompt = [int(t) for t in torch.as_tensor(prompt).reshape(-1)]
    if not prompt:
        raise ValueError("generate: the prompt is empty")
    P = model.options["max_position_embeddings"]
    if P > 0 and len(prompt) + max_new_tokens > P:
        raise ValueError(f"generate: prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"max_position_embeddings = {P}")
    was_training = model.training
    model.eval()
    try:
        state = model.init_state(1)
        device = model.embeddings.word_embeddings.weight.device
        for t in prompt:
            logits = model.step(state, torch.tensor([t], device=device))
        out = []
        for i in range(max_new_tokens):
            nxt = pick_token(logits[0], temperature, top_k, generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = model.step(state, torch.tensor([nxt], device=device))
        return out
    finally:
        model.train(was_training)


def pick_token(logits, temperature=1.0, top_k=0, generator=None):
    """The next token from logits (V,)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float()
    if 0 < top_k < logits.numel():
        values, ids = torch.topk(logits, top_k)
    else:
        values, ids = logits, torch.arange(logits.numel(), device=logits.device)
    p = torch.softmax(values / temperature, dim=-1)
    return int(ids[int(torch.multinomial(p.cpu(), 1, generator=generator))])
