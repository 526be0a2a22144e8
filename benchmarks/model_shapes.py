"""Parameter shapes of well-known models, built in code (no downloads): what an optimizer step sees
when training them. ``scale`` divides the widths (and above 2 caps the depth at 2 layers) while keeping
the mix of large matrices, embeddings and small vectors."""

from __future__ import annotations

from workloads import ParamSet


def gpt2_124m(scale: int = 1) -> ParamSet:
    """GPT-2 small (124M): 12 layers, d_model 768, vocab 50257, context 1024 (148 tensors)."""
    d, vocab, ctx, layers = 768 // scale, 50257 // scale, 1024 // scale, 12 if scale <= 2 else 2
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,),                      # ln_1
                   (d, 3 * d), (3 * d,),            # attn.c_attn
                   (d, d), (d,),                    # attn.c_proj
                   (d,), (d,),                      # ln_2
                   (d, 4 * d), (4 * d,),            # mlp.c_fc
                   (4 * d, d), (d,)]                # mlp.c_proj
    shapes += [(d,), (d,)]                          # ln_f (the LM head is tied to wte)
    return ParamSet("GPT-2 124M" + (f" /{scale}" if scale > 1 else ""), tuple(shapes))


def bert_base(scale: int = 1) -> ParamSet:
    """BERT-base (110M): 12 layers, hidden 768, vocab 30522, 512 positions, with pooler (199 tensors)."""
    d, vocab, pos, layers = 768 // scale, 30522 // scale, 512 // scale, 12 if scale <= 2 else 2
    shapes = [(vocab, d), (pos, d), (2, d), (d,), (d,)]
    for _ in range(layers):
        shapes += [(d, d), (d,)] * 3                # query, key, value
        shapes += [(d, d), (d,), (d,), (d,)]        # attention output dense + LayerNorm
        shapes += [(4 * d, d), (4 * d,)]            # intermediate
        shapes += [(d, 4 * d), (d,), (d,), (d,)]    # output dense + LayerNorm
    shapes += [(d, d), (d,)]                        # pooler
    return ParamSet("BERT-base" + (f" /{scale}" if scale > 1 else ""), tuple(shapes))


def resnet50(scale: int = 1) -> ParamSet:
    """ResNet-50 (25.6M): bottleneck stages [3, 4, 6, 3], batch-norm weights and biases, fc 1000
    (161 tensors)."""
    width0 = 64 // scale
    shapes = [(width0, 3, 7, 7), (width0,), (width0,)]
    in_ch = width0
    for stage, blocks in enumerate((3, 4, 6, 3)):
        w = width0 * 2**stage
        for b in range(blocks):
            shapes += [(w, in_ch, 1, 1), (w,), (w,),
                       (w, w, 3, 3), (w,), (w,),
                       (4 * w, w, 1, 1), (4 * w,), (4 * w,)]
            if b == 0:
                shapes += [(4 * w, in_ch, 1, 1), (4 * w,), (4 * w,)]  # downsample
            in_ch = 4 * w
    shapes += [(1000 // scale, in_ch), (1000 // scale,)]
    return ParamSet("ResNet-50" + (f" /{scale}" if scale > 1 else ""), tuple(shapes))


def model_sets(quick: bool, device: str = "cpu") -> list[ParamSet]:
    """Full size on GPUs. On CPUs GPT-2 and BERT at half width (a quarter of the parameters, same
    tensor count), since a benchmark case keeps every variant's params, grads and states alive at
    once. Quick mode: 1/8 width, 2 layers."""
    if quick:
        return [gpt2_124m(8), bert_base(8), resnet50(8)]
    wide = 1 if device.startswith("cuda") else 2
    return [gpt2_124m(wide), bert_base(wide), resnet50(1)]
