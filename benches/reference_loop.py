"""The edit step as the paper's Python code runs it, for `clipshape bench --reference`.

Plain eager PyTorch in the structure of rosinality's StyleGAN2 (fused modulated conv with a
grouped convolution, native upfirdn2d) and OpenAI's CLIP ViT (nn.MultiheadAttention, QuickGELU),
StyleCLIP's Upsample x7 + AvgPool into CLIP, Adam on a shift of one conv's raw weight. Weights
are random with the real shapes: only the time is of interest. Prints one markdown row per
batch size in the format of `clipshape bench`, so both land in one table.

    python3 benches/reference_loop.py --size 256 --batches 1,8 --device cpu
"""

import argparse
import math
import resource
import time

import torch
import torch.nn.functional as F
from torch import nn


def fir(taps=(1, 3, 3, 1), gain=4.0):
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def upfirdn2d(x, k, up=1, pad=(0, 0)):
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.view(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).view(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    ph, pw = x.shape[2:]
    kh, kw = k.shape
    x = F.conv2d(x.reshape(n * c, 1, ph, pw), torch.flip(k, [0, 1]).view(1, 1, kh, kw))
    return x.view(n, c, ph - kh + 1, pw - kw + 1)


def lrelu(x, bias):
    return F.leaky_relu(x + bias.view(1, -1, *([1] * (x.dim() - 2))), 0.2) * math.sqrt(2)


class ModConv(nn.Module):
    def __init__(self, cin, cout, k, style_dim, demodulate=True, upsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k), requires_grad=False)
        self.mod_w = nn.Parameter(torch.randn(cin, style_dim), requires_grad=False)
        self.mod_b = nn.Parameter(torch.ones(cin), requires_grad=False)
        self.cin, self.cout, self.k = cin, cout, k
        self.scale, self.mod_scale = 1 / math.sqrt(cin * k * k), 1 / math.sqrt(style_dim)
        self.demodulate, self.upsample = demodulate, upsample
        self.register_buffer("blur", fir())

    def forward(self, x, style, delta=None):
        b = x.shape[0]
        s = F.linear(style, self.mod_w * self.mod_scale, self.mod_b).view(b, 1, self.cin, 1, 1)
        w = self.scale * (self.weight if delta is None else self.weight + delta) * s
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8).view(b, self.cout, 1, 1, 1)
        x = x.reshape(1, b * self.cin, *x.shape[2:])
        if self.upsample:
            w = w.transpose(1, 2).reshape(b * self.cin, self.cout, self.k, self.k)
            out = F.conv_transpose2d(x, w, stride=2, groups=b)
            return upfirdn2d(out.view(b, self.cout, *out.shape[2:]), self.blur, pad=(1, 1))
        out = F.conv2d(x, w.reshape(b * self.cout, self.cin, self.k, self.k), padding=self.k // 2, groups=b)
        return out.view(b, self.cout, *out.shape[2:])


class Generator(nn.Module):
    """Synthesis network only (the edit starts from W+)."""

    def __init__(self, size, style_dim=512):
        super().__init__()
        ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
        self.const = nn.Parameter(torch.randn(1, 512, 4, 4), requires_grad=False)
        self.conv1 = ModConv(512, 512, 3, style_dim)
        self.rgb1 = ModConv(512, 3, 1, style_dim, demodulate=False)
        self.convs, self.rgbs = nn.ModuleList(), nn.ModuleList()
        cin, res = 512, 8
        while res <= size:
            self.convs.append(ModConv(cin, ch[res], 3, style_dim, upsample=True))
            self.convs.append(ModConv(ch[res], ch[res], 3, style_dim))
            self.rgbs.append(ModConv(ch[res], 3, 1, style_dim, demodulate=False))
            cin, res = ch[res], res * 2
        self.noises = [torch.randn(1, 1, 1 << ((i + 5) // 2), 1 << ((i + 5) // 2)) * 0.1
                       for i in range(len(self.convs) + 1)]
        self.register_buffer("up", fir())
        self.n_latent = len(self.rgbs) * 2 + 2

    def forward(self, w, shifted=3, delta=None):
        d = lambda i: delta if i == shifted else None  # noqa: E731
        x = lrelu(self.conv1(self.const.repeat(w.shape[0], 1, 1, 1), w[:, 0]) + self.noises[0], torch.zeros(512))
        skip = self.rgb1(x, w[:, 1])
        for j, rgb in enumerate(self.rgbs):
            for t in (0, 1):
                conv = self.convs[2 * j + t]
                x = conv(x, w[:, 2 * j + 1 + t], d(2 * j + t)) + self.noises[2 * j + 1 + t]
                x = lrelu(x, torch.zeros(conv.cout))
            skip = rgb(x, w[:, 2 * j + 3]) + upfirdn2d(skip, self.up, up=2, pad=(2, 1))
        return skip


class Block(nn.Module):
    def __init__(self, d, heads, causal=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.causal = causal

    def forward(self, x):
        mask = None
        if self.causal:
            n = x.shape[0]
            mask = torch.full((n, n), float("-inf")).triu_(1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = self.c_fc(self.ln_2(x))
        return x + self.c_proj(h * torch.sigmoid(1.702 * h))


class ClipViT(nn.Module):
    """ViT-B/32 image and text towers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 768, 32, 32, bias=False)
        self.cls = nn.Parameter(torch.randn(768) * 0.03)
        self.pos = nn.Parameter(torch.randn(50, 768) * 0.03)
        self.ln_pre, self.ln_post = nn.LayerNorm(768), nn.LayerNorm(768)
        self.visual = nn.Sequential(*[Block(768, 12) for _ in range(12)])
        self.proj = nn.Parameter(torch.randn(768, 512) * 0.03)
        self.tok = nn.Embedding(49408, 512)
        self.tpos = nn.Parameter(torch.randn(77, 512) * 0.01)
        self.text = nn.Sequential(*[Block(512, 8, causal=True) for _ in range(12)])
        self.ln_final = nn.LayerNorm(512)
        self.tproj = nn.Parameter(torch.randn(512, 512) * 0.04)
        for p in self.parameters():
            p.requires_grad_(False)

    def encode_image(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos
        x = self.visual(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj

    def encode_text(self, ids):
        x = self.text((self.tok(ids) + self.tpos).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_final(x)[torch.arange(ids.shape[0]), ids.argmax(-1)] @ self.tproj


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    g, clip = Generator(args.size).to(dev), ClipViT().to(dev)
    g.noises = [n.to(dev) for n in g.noises]
    up = nn.Upsample(scale_factor=7)
    pool = nn.AvgPool2d(kernel_size=args.size // 32)
    threads = "%d threads" % torch.get_num_threads() if dev.type == "cpu" else str(dev)
    for b in [int(v) for v in args.batches.split(",")]:
        ids = torch.zeros(b, 77, dtype=torch.long, device=dev)
        ids[:, 0], ids[:, 1] = 49406, 49407
        with torch.no_grad():
            text = F.normalize(clip.encode_text(ids), dim=-1)
        w = torch.randn(b, g.n_latent, 512, device=dev)
        x = torch.zeros(b, *g.convs[3].weight.shape[1:], device=dev, requires_grad=True)
        opt = torch.optim.Adam([x], lr=0.01)

        def step():
            img = g(w, 3, x)
            feat = F.normalize(clip.encode_image(pool(up(img))), dim=-1)
            loss = (10 * (1 - (feat * text).sum(-1)) + 0.05 * x.flatten(1).norm(dim=1)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t) * 1e3 / args.steps
        # Peak RSS of the process so far (Linux: KB); `clipshape bench --reference` reads ROW lines.
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("| reference loop (PyTorch eager), config-f %dpx + ViT-B/32 (random) | %s (%s) | %d | "
              "edit step (gen+CLIP fwd+bwd, Adam), %.3f steps/s | %.2f | %.2f | %.0f |"
              % (args.size, dev.type, threads, b, 1e3 / ms, ms, ms / b, peak_mb), flush=True)
        print("ROW %d %.3f %.1f" % (b, ms, peak_mb), flush=True)


if __name__ == "__main__":
    main()
