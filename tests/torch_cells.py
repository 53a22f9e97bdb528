"""PyTorch cells written the ways people write them (fixtures of test_from_torch.py).

Each convertible class is ``CLASS(input_size, hidden_size)`` with ``forward(x_t, state)
-> (out, new_state)``; the ``Refuse*`` classes hold one thing a cell cannot express each.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class FastLSTMCell(nn.Module):
    """The LSTM cell of PyTorch's fastrnns benchmark (custom_lstms.py), as an nn.Module."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.randn(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.randn(4 * hidden_size))

    def forward(self, input, state):
        hx, cx = state
        gates = (torch.mm(input, self.weight_ih.t()) + self.bias_ih +
                 torch.mm(hx, self.weight_hh.t()) + self.bias_hh)
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)

        ingate = torch.sigmoid(ingate)
        forgetgate = torch.sigmoid(forgetgate)
        cellgate = torch.tanh(cellgate)
        outgate = torch.sigmoid(outgate)

        cy = (forgetgate * cx) + (ingate * cellgate)
        hy = outgate * torch.tanh(cy)

        return hy, (hy, cy)


class GateLinearLSTM(nn.Module):
    """One nn.Linear per gate over x and one over h, state (h, c), F. spellings."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.x_i, self.h_i = nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.x_f, self.h_f = nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.x_g, self.h_g = nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, hidden_size)
        self.x_o, self.h_o = nn.Linear(input_size, hidden_size), nn.Linear(hidden_size, hidden_size)

    def forward(self, x, state):
        h, c = state
        i = F.sigmoid(self.x_i(x) + self.h_i(h))
        f = F.sigmoid(self.x_f(x) + self.h_f(h))
        g = F.tanh(self.x_g(x) + self.h_g(h))
        o = F.sigmoid(self.x_o(x) + self.h_o(h))
        c_next = f * c + i * g
        h_next = o * F.tanh(c_next)
        return h_next, (h_next, c_next)


class CatLSTM(nn.Module):
    """torch.cat([x, h], 1) into one Linear, split by size, method spellings."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(input_size + hidden_size, 4 * hidden_size)

    def forward(self, x, state):
        h, c = state
        z = self.gates(torch.cat([x, h], dim=1))
        i, f, g, o = z.split(self.hidden_size, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        return h, (h, c)


class FLinearLSTM(nn.Module):
    """F.linear with explicit parameters, the state order (c, h), slices [:, a:b]."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4 * hidden_size, input_size) * 0.3)
        self.u = nn.Parameter(torch.randn(4 * hidden_size, hidden_size) * 0.3)
        self.b = nn.Parameter(torch.zeros(4 * hidden_size))

    def forward(self, x, state):
        c, h = state
        n = h.shape[1]
        z = F.linear(x, self.w, self.b) + F.linear(h, self.u)
        forget = torch.sigmoid(z[:, :n] + 1.0)
        write = torch.sigmoid(z[:, n:2 * n])
        candidate = torch.tanh(z[:, 2 * n:3 * n])
        read = torch.sigmoid(z[:, 3 * n:])
        memory = forget * c + write * candidate
        hidden = read * torch.tanh(memory)
        return hidden, (memory, hidden)


class TutorialGRU(nn.Module):
    """A tutorial GRU: a Linear for x and one for h, chunked in three, 1 - z; x flattened
    with view and the gates squeezed, as the tutorial does."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x, hidden):
        x = x.view(-1, x.size(1))
        gate_x = self.x2h(x).squeeze()
        gate_h = self.h2h(hidden).squeeze()
        i_r, i_i, i_n = gate_x.chunk(3, 1)
        h_r, h_i, h_n = gate_h.chunk(3, 1)
        resetgate = torch.sigmoid(i_r + h_r)
        inputgate = torch.sigmoid(i_i + h_i)
        newgate = torch.tanh(i_n + (resetgate * h_n))
        hy = (1 - inputgate) * newgate + inputgate * hidden
        return hy, hy


class PeepholeLSTM(nn.Module):
    """The peephole LSTM of Gers & Schmidhuber: element-wise peephole parameters, the output
    valve reading the new memory; torch.addmm and x @ W.t()."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.W = nn.Parameter(torch.randn(input_size, 4 * hidden_size) * 0.3)
        self.U = nn.Parameter(torch.randn(hidden_size, 4 * hidden_size) * 0.3)
        self.bias = nn.Parameter(torch.randn(4 * hidden_size) * 0.1)
        self.w_ci = nn.Parameter(torch.randn(hidden_size))
        self.w_cf = nn.Parameter(torch.randn(hidden_size))
        self.w_co = nn.Parameter(torch.randn(hidden_size))

    def forward(self, x, state):
        h, c = state
        gates = torch.addmm(self.bias, x, self.W) + h @ self.U
        i, f, g, o = torch.chunk(gates, 4, dim=1)
        i = torch.sigmoid(i + self.w_ci * c)
        f = torch.sigmoid(f + self.w_cf * c)
        c_t = f * c + i * torch.tanh(g)
        o = torch.sigmoid(o + self.w_co * c_t)
        h_t = o * torch.tanh(c_t)
        return h_t, (h_t, c_t)


class Activations(nn.Module):
    """The other activations, in their F. and nn. spellings, a number divided, a dropout."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.a = nn.Linear(input_size, hidden_size)
        self.b = nn.Linear(hidden_size, hidden_size, bias=False)
        self.act = nn.ELU(alpha=0.5)
        self.drop = nn.Dropout(0.2)

    def forward(self, x, h):
        pre = self.a(x) + self.b(h)
        k = F.hardsigmoid(pre)
        u = F.leaky_relu(pre, 0.1) + self.act(pre) - F.softplus(pre) / 2
        v = torch.clamp(self.drop(u), -2.0, 2.0) * F.softsign(pre)
        h_new = k * h + (1 - k) * F.threshold(v, 0.1, 0.0)
        return -h_new, h_new


class DerivedWeights(nn.Module):
    """Weights computed from parameters (a scale as the exponential of a logarithm, a
    symmetric matrix): exact only when computed in float64, then rounded once."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.l = nn.Linear(input_size + hidden_size, hidden_size)
        self.log_scale = nn.Parameter(torch.randn(hidden_size) * 0.1)
        self.m = nn.Parameter(torch.randn(hidden_size, hidden_size))

    def forward(self, x, h):
        z = torch.tanh(self.l(torch.cat([x, h], 1)))
        mixed = z @ (self.m @ self.m.t() * 0.1 + torch.eye(self.m.shape[0]))
        h_new = torch.tanh(mixed) * torch.exp(self.log_scale)
        return h_new, h_new


class PeepholeSplit(nn.Module):
    """An element-wise weighted state plus a linear, split unevenly and joined again into
    another linear: a cut peephole weight is rows of a diagonal matrix."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.lin = nn.Linear(input_size, hidden_size)
        self.mix = nn.Linear(hidden_size, hidden_size)
        self.p = nn.Parameter(torch.randn(hidden_size))

    def forward(self, x, h):
        z = self.p * h + self.lin(x)
        a, b = z.split([2, self.hidden_size - 2], 1)
        h = torch.tanh(self.mix(torch.cat([a, b], 1)))
        return h, h


class GatedHalves(nn.Module):
    """An element-wise weight on a sigmoid of a linear of 2H units, then chunked: the
    weight is cut with the sigmoid, into a peephole weight of each half."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, 2 * hidden_size)
        self.p = nn.Parameter(torch.randn(2 * hidden_size))

    def forward(self, x, h):
        z = torch.sigmoid(self.lin(torch.cat([x, h], 1))) * self.p + 0.1
        a, b = z.chunk(2, 1)
        h = a * torch.tanh(b)
        return h, h


class NarrowGates(nn.Module):
    """Gates taken with narrow(), the last counted from the end (a negative start)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.lin = nn.Linear(input_size + hidden_size, 2 * hidden_size)

    def forward(self, x, h):
        z = self.lin(torch.cat([x, h], 1))
        r = torch.sigmoid(z.narrow(1, 0, self.hidden_size))
        u = torch.tanh(z.narrow(1, -self.hidden_size, self.hidden_size))
        h = r * h + (1 - r) * u
        return h, h


class AddToState(nn.Module):
    """``h += W x`` on the state itself, then tanh: each step's output is a copy of its own
    (the check once read the next step's in-place change into the last one's output)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        h += self.lin(x)
        h = torch.tanh(h)
        return h, h


class Regrouped(nn.Module):
    """Sums and products grouped on their right: ``h + (g - g)`` is ``h``, where
    ``h + g - g`` (what from-torch once wrote) is 0 in float32 with ``g`` near 3e8."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h], -1)))
        g = h * 1e8 + 3e8
        o = h + (g - g)
        return o * (o * 0.5), h


class RefuseBufferCounter(nn.Module):
    """Counts its calls in a buffer, changed in place: kept state as an int attribute is."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, h):
        self.calls.add_(1)
        z = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return z * (self.calls <= 8), z


class RefuseParameterCounter(nn.Module):
    """Counts its calls in a parameter that takes no gradient, changed in place (which the
    trace sees as a proxy: the interpreter runs it)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.k = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x, h):
        self.k.add_(1)
        h = torch.tanh(self.lin(torch.cat([x, h], 1))) * self.k
        return h, h


class RefuseDivideByZero(nn.Module):
    """Divides by a parameter that starts at 0."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h], 1)) / self.temperature)
        return h, h


class RefuseNoise(nn.Module):
    """Adds fresh random numbers at every call."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h], 1)) + 0.1 * torch.randn(self.hidden_size))
        return h, h


class RefuseLearnedSlope(nn.Module):
    """A learned slope given where PyTorch takes a number: torch.fx traces it, but the
    module itself raises TypeError (a traceback, from the check that runs it)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.slope = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, h):
        h = F.leaky_relu(self.lin(torch.cat([x, h], 1)), self.slope)
        return h, h


class RefuseSplitSizes(nn.Module):
    """Split sizes that do not add up to the width: traced, but PyTorch's RuntimeError at
    run time was explained as a float32 tensor meeting float64 ones."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.lin = nn.Linear(input_size + hidden_size, 3 * hidden_size)

    def forward(self, x, h):
        a, b = self.lin(torch.cat([x, h], 1)).split([self.hidden_size, self.hidden_size], 1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return h, h


class RefuseAlias(nn.Module):
    """``z += h`` where ``a`` holds the same tensor: torch.fx traces it as ``z = z + h``,
    and the module's ``a`` changes with ``z``."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        """The output is a, the new state z.
This line starts at column 0, as a docstring's may."""
        z = torch.tanh(self.lin(torch.cat([x, h], 1)))
        a = z
        z += h
        return a, z


class RefuseInputAsHidden(nn.Module):
    """Adds x to a value of the hidden size, as if x held the input's projection already."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(x + self.lin(h))
        return h, h


class RefuseLayerNorm(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.ln = nn.LayerNorm(hidden_size)

    def forward(self, x, h):
        z = self.ln(self.lin(torch.cat([x, h], 1)))
        return torch.tanh(z), torch.tanh(z)


class RefuseSubAlpha(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.a = nn.Linear(input_size, hidden_size)
        self.b = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(torch.sub(self.a(x), torch.tanh(self.b(h)), alpha=3.0))
        return h, h


class RefuseWrappedCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def forward(self, x, state):
        h, c = self.cell(x, state)
        return h, (h, c)


class RefuseCatOutput(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.a = nn.Linear(input_size + hidden_size, hidden_size // 2)
        self.b = nn.Linear(input_size + hidden_size, hidden_size - hidden_size // 2)

    def forward(self, x, h):
        z = torch.cat([x, h], 1)
        joined = torch.cat([torch.tanh(self.a(z)), torch.tanh(self.b(z))], 1)
        return joined, joined


class RefuseSum(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        scale = h.sum(dim=1, keepdim=True)
        h = torch.tanh(self.lin(x) + scale)
        return h, h


class RefuseBranch(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        if h.abs().max() > 1:
            h = h * 0.5
        h = torch.tanh(self.lin(x) + h)
        return h, h


class RefuseInPlace(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        z = self.lin(torch.cat([x, h], 1))
        z.sigmoid_()
        return z, z


class LearnedScale(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.scale = nn.Parameter(torch.tensor(0.75))

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h], 1))) * self.scale
        return h, h


class LearnedClamp(nn.Module):
    """A learned bound of a clamp: a number the cell writes as a constant."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.bound = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, h):
        h = torch.clamp(self.lin(torch.cat([x, h], 1)), -self.bound, self.bound)
        return h, h


class RefuseDetach(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h.detach()], 1)))
        return h, h


class RefuseDtype(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x.to(h.dtype), h], 1)))
        return h, h


class RefuseDivInPlace(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        z = self.lin(torch.cat([x, h], 1))
        z.div_(2.0)
        return torch.tanh(z), torch.tanh(z)


class InputKeyword(nn.Module):
    """``torch.tanh(input=z)``: the operand by its keyword (it was refused)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.tanh(input=self.lin(torch.cat([x, h], 1)))
        return h, h


class RefuseOneTuple(nn.Module):
    """One state taken as a tuple of one: from-torch passes it as the tensor itself."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, hs):
        (h,) = hs
        h = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return h, (h,)


class RefuseNumberOfData(nn.Module):
    """A Python number made from a tensor's value."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        scale = float(h[0, 0])
        h = torch.tanh(self.lin(torch.cat([x, h], 1))) * scale
        return h, h


class TrainingBranch(nn.Module):
    """Halves its pre-activation while training only: converted in eval mode, noted."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        z = self.lin(torch.cat([x, h], 1))
        if self.training:
            z = z * 0.5
        h = torch.tanh(z)
        return h, h


class ChunkOfScaled(nn.Module):
    """A scaled linear cut in two: each half's linear is a line of its own."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, 2 * hidden_size)

    def forward(self, x, h):
        z = self.lin(torch.cat([x, h], 1)) / 2.0
        u, v = z.chunk(2, 1)
        h = torch.sigmoid(u) * torch.tanh(v)
        return h, h


class RefuseItemAssignment(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        z = torch.tanh(self.lin(torch.cat([x, h], 1)))
        z[:, :2] = 0
        return z, z


class RefuseSeparateStates(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h, c):
        c = c + torch.tanh(self.lin(torch.cat([x, h], 1)))
        return torch.tanh(c), (torch.tanh(c), c)


class RefuseProjection(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.proj = nn.Linear(hidden_size, 2)

    def forward(self, x, h):
        h = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return self.proj(h), h


class RefuseDropoutDefault(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = F.dropout(torch.tanh(self.lin(torch.cat([x, h], 1))), 0.2)
        return h, h


class RefuseClampPerUnit(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.t = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x, h):
        h = torch.clamp(self.lin(torch.cat([x, h], 1)), -self.t, self.t)
        return h, h


class RefuseClampMin(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = torch.clamp(self.lin(torch.cat([x, h], 1)), min=0.0)
        return h, h


class RefuseWeightNormed(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.utils.parametrizations.weight_norm(nn.Linear(input_size + hidden_size,
                                                                   hidden_size))

    def forward(self, x, h):
        normed = self.lin(torch.cat([x, h], 1))
        return torch.tanh(normed), torch.tanh(normed)


class RefuseDictState(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, state):
        h, c = state
        c = torch.tanh(self.lin(torch.cat([x, h], 1))) + c
        return torch.tanh(c), {"h": torch.tanh(c), "c": c}


class RefuseGradFlag(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        frozen = self.lin(torch.cat([x, h], 1)).requires_grad_(False)
        return torch.tanh(frozen), torch.tanh(frozen)


class RefuseRankBranch(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        if x.dim() == 1:
            x = x[None]
        return torch.tanh(self.lin(torch.cat([x, h], 1))), h


class RefuseCounter(nn.Module):
    """Keeps a count of its calls: each step computes another thing after the eighth."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.calls = 0

    def forward(self, x, h):
        self.calls += 1
        z = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return z * (self.calls <= 8), z


class RefuseSeen(nn.Module):
    """Counts its calls in a dict: kept state as surely as an int attribute."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.seen = {"calls": 0}
        self.unused = float("nan")  # unchanged, though NaN equals nothing

    def forward(self, x, h):
        self.seen["calls"] += 1
        z = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return z * (1.0 if self.seen["calls"] <= 8 else 0.5), z


class RefuseArity(nn.Module):
    """Its constructor takes three sizes, not (input_size, hidden_size)."""

    def __init__(self, input_size, hidden_size, depth):
        super().__init__()


class RefuseOneReturn(nn.Module):
    """Returns the new state alone, not (out, new_state)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        return torch.tanh(self.lin(torch.cat([x, h], 1)))
