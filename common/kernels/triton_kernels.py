"""The Triton kernels (`@triton.jit` only; launchers and autograd live in `common.kernels.ops`).

This module imports Triton, so `common.kernels` imports it lazily, the first time a Triton path runs.
Whether these kernels are compiled for a GPU or run by Triton's CPU interpreter is fixed when this module
is first imported: Triton reads `TRITON_INTERPRET` when `@triton.jit` decorates a function.

Interpreter-safe by construction (see docs/kernels.md): no libdevice, no inline asm, no atomics, no
indirect loads, bf16/fp16 values are cast to the fp32 (or fp64) accumulator right after loading, and every
`tl.dot` block is >= 16 so the same code compiles on a GPU. No `@triton.autotune`: block sizes are chosen
by the launchers.
"""
import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)


# ---------------------------------------------------------------------------------------------------------
# Activations (forward and derivative) fused into the depthwise kernel's epilogue. ACT ids: reference.ACTS.
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _act_fwd(z, ACT: tl.constexpr):
    out = z
    if ACT == 1:  # relu
        out = tl.maximum(z, 0.0)
    elif ACT == 2:  # relu6
        out = tl.minimum(tl.maximum(z, 0.0), 6.0)
    elif ACT == 3:  # gelu (erf): z * Phi(z)
        out = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACT == 4:  # gelu (tanh): 0.5 z (1 + tanh(u)) = z * sigmoid(2u), no libdevice tanh needed
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        out = z * tl.sigmoid(2.0 * u)
    elif ACT == 5:  # silu
        out = z * tl.sigmoid(z)
    elif ACT == 6:  # hardswish
        out = z * tl.minimum(tl.maximum(z + 3.0, 0.0), 6.0) / 6.0
    return out


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    """d act(z) / dz, with PyTorch's conventions at the kinks (relu'(0) = 0, relu6'(0) = relu6'(6) = 0)."""
    g = z * 0.0 + 1.0
    if ACT == 1:
        g = tl.where(z > 0, 1.0, 0.0)
    elif ACT == 2:
        g = tl.where((z > 0) & (z < 6.0), 1.0, 0.0)
    elif ACT == 3:
        cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
        pdf = 0.3989422804014327 * tl.exp(-0.5 * z * z)
        g = cdf + z * pdf
    elif ACT == 4:
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        sg = tl.sigmoid(2.0 * u)
        g = sg + z * sg * (1.0 - sg) * 2.0 * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
    elif ACT == 5:
        sg = tl.sigmoid(z)
        g = sg * (1.0 + z * (1.0 - sg))
    elif ACT == 6:
        g = tl.where(z < -3.0, 0.0, tl.where(z <= 3.0, (2.0 * z + 3.0) / 6.0, 1.0))
    return g


# ---------------------------------------------------------------------------------------------------------
# 1. Depthwise k x k conv, stride 1, 'same' padding PAD = DIL*(K-1)//2, any strides (channels-last is the
#    fast layout: a program's BLOCK_C channels are contiguous, and a tap's shifted tile moves by whole
#    pixels, so the loads stay aligned; the launcher converts NCHW inputs to channels-last by default). One
#    program = one spatial tile of BLOCK_H x BLOCK_W pixels (flattened to one axis) x BLOCK_C channels of one
#    image (grid axis 0 = image * tiles, so no grid axis limit is reached by large batches or maps); the K*K
#    taps are a loop (not unrolled: K goes up to 31), each tap one masked load of the shifted tile.
#    The weight is read in its own (C, K*K) layout (no transposed copy); FLIP=True reads it rotated by 180
#    degrees (the dX pass), so the backward needs no flipped copy either.
#    GRAD=False: y = act(conv(x) + bias)             (forward; with FLIP and ACT=0: dX)
#    GRAD=True:  y = g * act'(conv(x) + bias)        (backward: recompute z, write dZ = dY * act'(z))
#    Offsets inside one image are int32 (the launcher checks that one image spans < 2^31 elements); the
#    image offset b * stride_b is int64.
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def dwconv_kernel(x_ptr, w_ptr, b_ptr, g_ptr, y_ptr, H, W, C, TH, TW, I0, I1, J0, J1,
                  sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                  K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, ACT: tl.constexpr,
                  HAS_BIAS: tl.constexpr, GRAD: tl.constexpr, FLIP: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)  # image * (TH*TW) + spatial tile (TW tiles per tile-row)
    pid_c = tl.program_id(1)
    b = (pid // (TH * TW)).to(tl.int64)
    pid_t = pid % (TH * TW)
    pix = tl.arange(0, BLOCK_H * BLOCK_W)
    hh = (pid_t // TW) * BLOCK_H + pix // BLOCK_W  # (P,) output rows
    ww = (pid_t % TW) * BLOCK_W + pix % BLOCK_W  # (P,) output cols
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    cmask = oc < C
    acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
    x_c = x_ptr + b * sxb + oc[None, :] * sxc  # (1, BLOCK_C) pointers
    w_c = w_ptr + oc * (K * K)  # (BLOCK_C,) pointers: weight is (C, K*K)
    h0 = (pid_t // TW) * BLOCK_H
    w0 = (pid_t % TW) * BLOCK_W
    for i in range(I0, I1):  # [I0, I1) x [J0, J1): the taps that can touch the image at all
        # skip kernel rows whose shifted tile lies wholly in the zero padding (large K on small maps)
        if (h0 + i * DIL - PAD < H) & (h0 + i * DIL - PAD + BLOCK_H > 0):
            ih = hh + (i * DIL - PAD)
            rok = (ih >= 0) & (ih < H)
            roff = ih * sxh
            for j in range(J0, J1):
                if (w0 + j * DIL - PAD < W) & (w0 + j * DIL - PAD + BLOCK_W > 0):
                    iw = ww + (j * DIL - PAD)
                    m = (rok & (iw >= 0) & (iw < W))[:, None] & cmask[None, :]
                    xv = tl.load(x_c + (roff + iw * sxw)[:, None], mask=m, other=0.0)
                    if FLIP:
                        wv = tl.load(w_c + ((K - 1 - i) * K + (K - 1 - j)), mask=cmask, other=0.0)
                    else:
                        wv = tl.load(w_c + (i * K + j), mask=cmask, other=0.0)
                    acc += xv.to(ACC) * wv.to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + oc, mask=cmask, other=0.0).to(ACC)[None, :]
    omask = ((hh < H) & (ww < W))[:, None] & cmask[None, :]
    if GRAD:
        g = tl.load(g_ptr + b * sgb + (hh * sgh + ww * sgw)[:, None] + oc[None, :] * sgc, mask=omask, other=0.0)
        out = g.to(ACC) * _act_grad(acc, ACT)
    else:
        out = _act_fwd(acc, ACT)
    tl.store(y_ptr + b * syb + (hh * syh + ww * syw)[:, None] + oc[None, :] * syc,
             out.to(y_ptr.dtype.element_ty), mask=omask)


@triton.jit
def dwconv_wgrad_small_kernel(x_ptr, dz_ptr, pw_ptr, pb_ptr, H, W, C, TH, TW, NT, TILES,
                              sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw,
                              K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
                              ACC: tl.constexpr, KK_P2: tl.constexpr, BLOCK_H: tl.constexpr,
                              BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """Weight gradient for small kernels (K <= 7), stage 1 of a two-stage deterministic (atomic-free)
    reduction. Tiles are the outer loop: each of the program's TILES tiles is read once, all K*K shifted
    copies of it in one (KK_P2, P, BLOCK_C) load (the shifts overlap, so they come from L1), and multiplied
    into KK_P2 x P x BLOCK_C accumulators in registers: no reduction inside the loop. After the loop one
    reduction over the P pixels gives partial[r, c, t] = sum dZ[b,h,w,c] * x[b, h+i*DIL-PAD, w+j*DIL-PAD, c]
    for every tap t = i*K + j (taps t >= K*K are padding, masked). Stage 2 is a torch .sum(0) over r.
    With HAS_BIAS it also writes the sum of dZ (partial bias gradient)."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = oc < C
    pix = tl.arange(0, BLOCK_H * BLOCK_W)
    tap = tl.arange(0, KK_P2)
    tmask = tap < K * K
    di = (tap // K) * DIL - PAD  # (KK_P2,) row shift of each tap
    dj = (tap % K) * DIL - PAD  # (KK_P2,) column shift
    acc = tl.zeros((KK_P2, BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
    accb = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
    for tt in range(TILES):
        tile = pid_r * TILES + tt
        b = (tile // (TH * TW)).to(tl.int64)
        rem = tile % (TH * TW)
        hh = (rem // TW) * BLOCK_H + pix // BLOCK_W  # (P,)
        ww = (rem % TW) * BLOCK_W + pix % BLOCK_W
        ok = (hh < H) & (ww < W) & (tile < NT)
        dz = tl.load(dz_ptr + b * sdb + (hh * sdh + ww * sdw)[:, None] + oc[None, :] * sdc,
                     mask=ok[:, None] & cmask[None, :], other=0.0).to(ACC)  # (P, BLOCK_C)
        ih = hh[None, :] + di[:, None]  # (KK_P2, P)
        iw = ww[None, :] + dj[:, None]
        xok = tmask[:, None] & ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        xv = tl.load(x_ptr + b * sxb + (ih * sxh + iw * sxw)[:, :, None] + oc[None, None, :] * sxc,
                     mask=xok[:, :, None] & cmask[None, None, :], other=0.0)  # (KK_P2, P, BLOCK_C)
        acc += xv.to(ACC) * dz[None, :, :]
        if HAS_BIAS:
            accb += dz
    part = tl.sum(acc, axis=1)  # (KK_P2, BLOCK_C): the one reduction
    r64 = pid_r.to(tl.int64)  # partial buffer (R, C, K*K) can exceed 2^31 elements
    tl.store(pw_ptr + r64 * C * (K * K) + oc[None, :] * (K * K) + tap[:, None], part,
             mask=tmask[:, None] & cmask[None, :])
    if HAS_BIAS:
        tl.store(pb_ptr + r64 * C + oc, tl.sum(accb, axis=0), mask=cmask)


@triton.jit
def dwconv_wgrad_kernel(x_ptr, dz_ptr, pw_ptr, pb_ptr, H, W, C, TH, TW, NT, TILES, I0, NI, J0, NJ,
                        sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw,
                        K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
                        ACC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """Weight gradient for large kernels (K > 7: K*K accumulators do not fit in registers), stage 1 of the
    two-stage reduction: for each tap t = i*K + j (outer loop), a (P, BLOCK_C) accumulator sums
    dZ * shifted x over the program's TILES tiles with no reduction inside the loop, then one reduction
    gives partial[r, c, t]. The tiles are re-read once per tap (from L2 on a GPU). Only the NI x NJ taps
    from (I0, J0) that can touch the image are visited (the caller zero-fills the others). With HAS_BIAS it
    also writes the sum of dZ."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = oc < C
    pix = tl.arange(0, BLOCK_H * BLOCK_W)
    r64 = pid_r.to(tl.int64)
    for tv in range(NI * NJ):
        t = (I0 + tv // NJ) * K + J0 + tv % NJ
        di = (t // K) * DIL - PAD
        dj = (t % K) * DIL - PAD
        acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
        for tt in range(TILES):
            tile = pid_r * TILES + tt
            rem = tile % (TH * TW)
            h0 = (rem // TW) * BLOCK_H
            w0 = (rem % TW) * BLOCK_W
            # skip tiles that are past the end or whose shifted tile lies wholly in the zero padding
            if (tile < NT) & (h0 + di < H) & (h0 + di + BLOCK_H > 0) & (w0 + dj < W) & (w0 + dj + BLOCK_W > 0):
                b = (tile // (TH * TW)).to(tl.int64)
                hh = h0 + pix // BLOCK_W
                ww = w0 + pix % BLOCK_W
                ok = (hh < H) & (ww < W)
                ih = hh + di
                iw = ww + dj
                xok = ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                dz = tl.load(dz_ptr + b * sdb + (hh * sdh + ww * sdw)[:, None] + oc[None, :] * sdc,
                             mask=ok[:, None] & cmask[None, :], other=0.0)
                xv = tl.load(x_ptr + b * sxb + (ih * sxh + iw * sxw)[:, None] + oc[None, :] * sxc,
                             mask=xok[:, None] & cmask[None, :], other=0.0)
                acc += dz.to(ACC) * xv.to(ACC)
        tl.store(pw_ptr + r64 * C * (K * K) + oc * (K * K) + t, tl.sum(acc, axis=0), mask=cmask)
    if HAS_BIAS:
        accb = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=ACC)
        for tt in range(TILES):
            tile = pid_r * TILES + tt
            b = (tile // (TH * TW)).to(tl.int64)
            rem = tile % (TH * TW)
            hh = (rem // TW) * BLOCK_H + pix // BLOCK_W
            ww = (rem % TW) * BLOCK_W + pix % BLOCK_W
            ok = (hh < H) & (ww < W) & (tile < NT)
            dz = tl.load(dz_ptr + b * sdb + (hh * sdh + ww * sdw)[:, None] + oc[None, :] * sdc,
                         mask=ok[:, None] & cmask[None, :], other=0.0)
            accb += dz.to(ACC)
        tl.store(pb_ptr + r64 * C + oc, tl.sum(accb, axis=0), mask=cmask)


# ---------------------------------------------------------------------------------------------------------
# 2. LKCA mixing: out[b] = T @ v[b] with T[(i,j),(p,q)] = kernel[p-i+s-1, q-j+s-1] generated tile by tile
#    from the (K*K) table (never materialised): a FlashAttention-shaped loop whose "scores" are gathered
#    from a table instead of computed as Q K^T. FLIP=True uses T^T (the dV = T^T dOut backward).
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def lkca_mix_kernel(k_ptr, v_ptr, o_ptr, N, C, S, MT,
                    svb, svn, svc, sob, son, soc,
                    FLIP: tl.constexpr, DOT_F32: tl.constexpr, IEEE: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)  # batch * MT + row tile (grid axis 0: no 65535 limit on the batch)
    pid_c = tl.program_id(1)
    b = (pid // MT).to(tl.int64)
    pid_m = pid % MT
    KS = 2 * S - 1
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output tokens n = (i, j)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # channels
    ri = rows // S
    rj = rows % S
    rmask = rows < N
    cmask = cols < C
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=ACC)
    for m0 in range(0, N, BLOCK_N):
        ms = m0 + tl.arange(0, BLOCK_N)  # input tokens m = (p, q)
        mi = ms // S
        mj = ms % S
        mmask = ms < N
        if FLIP:
            idx = (ri[:, None] - mi[None, :] + S - 1) * KS + (rj[:, None] - mj[None, :] + S - 1)
        else:
            idx = (mi[None, :] - ri[:, None] + S - 1) * KS + (mj[None, :] - rj[:, None] + S - 1)
        t = tl.load(k_ptr + idx, mask=rmask[:, None] & mmask[None, :], other=0.0)  # (BLOCK_M, BLOCK_N)
        vt = tl.load(v_ptr + b * svb + ms[:, None] * svn + cols[None, :] * svc,
                     mask=mmask[:, None] & cmask[None, :], other=0.0)  # (BLOCK_N, BLOCK_C)
        if DOT_F32:  # interpreter, fp32 and fp64: dot in the accumulator dtype
            tt = t.to(ACC)
            vv = vt.to(ACC)
        else:  # GPU fp16/bf16: tensor-core dot in v's dtype (T cast to it, as autocast would), fp32 accumulate
            tt = t.to(vt.dtype)
            vv = vt
        if IEEE:
            acc += tl.dot(tt, vv, input_precision="ieee")
        else:
            acc += tl.dot(tt, vv)
    tl.store(o_ptr + b * sob + rows[:, None] * son + cols[None, :] * soc, acc.to(o_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


@triton.jit
def lkca_dt_kernel(do_ptr, v_ptr, dt_ptr, N, C, B, B_PER,
                   sdb, sdn, sdc, svb, svn, svc,
                   DOT_F32: tl.constexpr, IEEE: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """partial_dT[split, n, m] = sum over the split's batches b and all channels c of dOut[b,n,c] v[b,m,c]:
    the (N, N) gradient of T, a GEMM with reduction length B*C, split over the batch for parallelism."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    split = tl.program_id(2)
    rn = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    rm = pid_m * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rn < N
    mmask = rm < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for bb in range(B_PER):
        b = split * B_PER + bb
        bok = b < B
        b64 = b.to(tl.int64)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            cm = (cs < C) & bok
            dot_ = tl.load(do_ptr + b64 * sdb + rn[:, None] * sdn + cs[None, :] * sdc,
                           mask=nmask[:, None] & cm[None, :], other=0.0)  # (BLOCK_M, BLOCK_C)
            vt = tl.load(v_ptr + b64 * svb + rm[None, :] * svn + cs[:, None] * svc,
                         mask=mmask[None, :] & cm[:, None], other=0.0)  # (BLOCK_C, BLOCK_N) = v^T tile
            if DOT_F32:
                dot_ = dot_.to(ACC)
                vt = vt.to(ACC)
            if IEEE:
                acc += tl.dot(dot_, vt, input_precision="ieee")
            else:
                acc += tl.dot(dot_, vt)
    tl.store(dt_ptr + (split * N + rn[:, None]).to(tl.int64) * N + rm[None, :], acc,
             mask=nmask[:, None] & mmask[None, :])


@triton.jit
def lkca_diag_kernel(dt_ptr, dk_ptr, N, S, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """dkernel[a, c] = sum over tokens (i, j) of dT[(i,j), (i+a-s+1, j+c-s+1)] (the in-range ones): the
    Toeplitz structure's reduction of dT onto the (2s-1)^2 table. Deterministic, no atomics."""
    pid = tl.program_id(0)
    KS = 2 * S - 1
    e = pid * BLOCK + tl.arange(0, BLOCK)
    emask = e < KS * KS
    da = e // KS - (S - 1)
    dc = e % KS - (S - 1)
    acc = tl.zeros((BLOCK,), dtype=ACC)
    for n in range(N):
        i = n // S
        j = n % S
        p = i + da
        q = j + dc
        valid = emask & (p >= 0) & (p < S) & (q >= 0) & (q < S)
        acc += tl.load(dt_ptr + n * N + p * S + q, mask=valid, other=0.0).to(ACC)
    tl.store(dk_ptr + e, acc, mask=emask)


# ---------------------------------------------------------------------------------------------------------
# 3. ECA. Forward = 2 kernels (+ a tiny torch sum when the pool is split), 3 passes over x:
#    (1) pool: partial[split, b, c] = scale * sum over the split's share of H*W of x (grid axis 0 = image *
#        SPLITS: the H*W reduction is split so a batch of 1 still fills the GPU; stage 2 sums the splits);
#    (2) gate+scale: each program recomputes its BLOCK_C gates from p (k taps, sigmoid) and writes y = x * g.
#    Backward = 2 kernels: (1) the same reduction kernel with PRODUCT: dg[b,c] = sum_hw dy*x; (2) dx = dy*g +
#    dp/HW. FLAT=True when H and W are one run of equal stride (sxh == W*sxw, e.g. NCHW-contiguous, where the
#    pixel axis is the contiguous one): the pixel offset is hw*sxw, which the compiler can vectorise.
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _eca_offsets(hw, W, sh, sw, FLAT: tl.constexpr):
    if FLAT:
        off = hw * sw
    else:
        off = (hw // W) * sh + (hw % W) * sw
    return off


@triton.jit
def eca_reduce_kernel(x_ptr, y_ptr, out_ptr, B, C, HW, W, PER, SPLITS, scale,
                      sxb, sxc, sxh, sxw, syb, syc, syh, syw,
                      PRODUCT: tl.constexpr, FLAT: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)  # image * SPLITS + split
    pid_c = tl.program_id(1)
    b = (pid // SPLITS).to(tl.int64)
    split = pid % SPLITS
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = oc < C
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=ACC)  # 2-D accumulator: one reduction after the loop
    lo = split * PER
    for s0 in range(lo, lo + PER, BLOCK_HW):
        hw = s0 + tl.arange(0, BLOCK_HW)
        m = ((hw < HW) & (hw < lo + PER))[:, None] & cmask[None, :]
        xv = tl.load(x_ptr + b * sxb + _eca_offsets(hw, W, sxh, sxw, FLAT)[:, None] + oc[None, :] * sxc,
                     mask=m, other=0.0).to(ACC)
        if PRODUCT:
            yv = tl.load(y_ptr + b * syb + _eca_offsets(hw, W, syh, syw, FLAT)[:, None] + oc[None, :] * syc,
                         mask=m, other=0.0)
            xv = xv * yv.to(ACC)
        acc += xv
    tl.store(out_ptr + (split * B + b) * C + oc, tl.sum(acc, axis=0) * scale, mask=cmask)


@triton.jit
def eca_scale_kernel(x_ptr, p_ptr, w_ptr, bias_ptr, y_ptr, C, HW, W, NS,
                     sxb, sxc, sxh, sxw, syb, syc, syh, syw,
                     KT: tl.constexpr, HAS_BIAS: tl.constexpr, FLAT: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)  # image * NS + pixel block
    pid_c = tl.program_id(1)
    b = (pid // NS).to(tl.int64)
    pid_s = pid % NS
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = oc < C
    # the gate of this program's channels: a[c] = sum_t w[t] p[b, c + t - (KT-1)/2] (+ bias), zero-padded
    a = tl.zeros((BLOCK_C,), dtype=ACC)
    for t in range(KT):
        cc = oc + t - (KT - 1) // 2
        pv = tl.load(p_ptr + b * C + cc, mask=cmask & (cc >= 0) & (cc < C), other=0.0).to(ACC)
        a += pv * tl.load(w_ptr + t).to(ACC)
    if HAS_BIAS:
        a += tl.load(bias_ptr).to(ACC)
    g = tl.sigmoid(a)
    hw = pid_s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    m = (hw < HW)[:, None] & cmask[None, :]
    xv = tl.load(x_ptr + b * sxb + _eca_offsets(hw, W, sxh, sxw, FLAT)[:, None] + oc[None, :] * sxc,
                 mask=m, other=0.0)
    out = xv.to(ACC) * g[None, :]
    tl.store(y_ptr + b * syb + _eca_offsets(hw, W, syh, syw, FLAT)[:, None] + oc[None, :] * syc,
             out.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def eca_dx_kernel(dy_ptr, g_ptr, dp_ptr, dx_ptr, C, HW, W, NS, inv_hw,
                  sdb, sdc, sdh, sdw, sxb, sxc, sxh, sxw,
                  FLAT: tl.constexpr, ACC: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)  # image * NS + pixel block
    pid_c = tl.program_id(1)
    b = (pid // NS).to(tl.int64)
    pid_s = pid % NS
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = oc < C
    g = tl.load(g_ptr + b * C + oc, mask=cmask, other=0.0).to(ACC)
    dp = tl.load(dp_ptr + b * C + oc, mask=cmask, other=0.0).to(ACC) * inv_hw
    hw = pid_s * BLOCK_HW + tl.arange(0, BLOCK_HW)
    m = (hw < HW)[:, None] & cmask[None, :]
    dy = tl.load(dy_ptr + b * sdb + _eca_offsets(hw, W, sdh, sdw, FLAT)[:, None] + oc[None, :] * sdc,
                 mask=m, other=0.0)
    dx = dy.to(ACC) * g[None, :] + dp[None, :]
    tl.store(dx_ptr + b * sxb + _eca_offsets(hw, W, sxh, sxw, FLAT)[:, None] + oc[None, :] * sxc,
             dx.to(dx_ptr.dtype.element_ty), mask=m)
