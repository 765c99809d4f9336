"""A small ensemble of neural networks stored as plain arrays, beside a forest.

A forest's prediction is a step function of its inputs; with six labels and a few
thousand training stars it cannot follow a smooth trend between its leaves, so it
flattens the ends of the range. A few fully connected networks, trained on the same
inputs and averaged, follow those trends, and their average with the forest (in ln
of the target) is the point estimate of the models that have one
(``"network"`` in a target's card entry; docs/models.rst says what it gained). The
forest keeps the spread: the interval calibration standardises the residuals of
the blended point estimate by the forest's predictive sigma.

`CompactNetwork` keeps what prediction needs in seven arrays (no pickle); members
share one shape (``n_inputs -> width -> ... -> width -> 1``, ReLU). They are
evaluated by a compiled kernel that sums in a fixed order per row, or by NumPy.
"""

import numpy as np

from ._rowwise import row_products

__all__ = ["CompactNetwork"]

_ARRAY_NAMES = ("input_weights", "input_biases", "hidden_weights", "hidden_biases",
                "output_weights", "output_biases", "output_scaling")


def _check_grid(grid):
    exponent = np.log2(grid) if grid > 0 else np.nan
    if not (np.isfinite(exponent) and exponent == np.round(exponent)):
        # Division and multiplication by a power of two are exact; by anything else
        # the rounding would add its own last-bit noise.
        raise ValueError(f"grid must be a power of two, got {grid!r}")


class CompactNetwork:
    """Mean of ``n_members`` ReLU networks of one shape, in plain arrays.

    Parameters
    ----------
    input_weights : ndarray, shape (n_members, n_inputs, width)
    input_biases : ndarray, shape (n_members, width)
    hidden_weights : ndarray, shape (n_members, n_hidden, width, width)
        Weights between consecutive hidden layers (``n_hidden`` may be 0).
    hidden_biases : ndarray, shape (n_members, n_hidden, width)
    output_weights : ndarray, shape (n_members, width)
    output_biases : ndarray, shape (n_members,)
    output_scaling : ndarray, shape (2,)
        ``(offset, scale)``: a member's raw output ``r`` stands for
        ``offset + scale * r`` (the networks are trained on standardised targets).

    Examples
    --------
    Two members of one hidden layer of width 2, computing ``|x|`` and ``relu(x)``:

    >>> import numpy as np
    >>> from stellar_ml_ages.network import CompactNetwork
    >>> net = CompactNetwork(
    ...     input_weights=np.array([[[1.0, -1.0]], [[1.0, 0.0]]]),
    ...     input_biases=np.zeros((2, 2)), hidden_weights=np.zeros((2, 0, 2, 2)),
    ...     hidden_biases=np.zeros((2, 0, 2)), output_weights=np.array([[1.0, 1.0], [1.0, 0.0]]),
    ...     output_biases=np.zeros(2), output_scaling=np.array([0.0, 1.0]))
    >>> net.predict(np.array([[-2.0], [3.0]])).tolist()  # (|x| + relu(x)) / 2
    [1.0, 3.0]
    """

    def __init__(self, input_weights, input_biases, hidden_weights, hidden_biases,
                 output_weights, output_biases, output_scaling):
        self.input_weights = np.ascontiguousarray(input_weights, dtype=np.float64)
        self.input_biases = np.ascontiguousarray(input_biases, dtype=np.float64)
        self.hidden_weights = np.ascontiguousarray(hidden_weights, dtype=np.float64)
        self.hidden_biases = np.ascontiguousarray(hidden_biases, dtype=np.float64)
        self.output_weights = np.ascontiguousarray(output_weights, dtype=np.float64)
        self.output_biases = np.ascontiguousarray(output_biases, dtype=np.float64)
        self.output_scaling = np.ascontiguousarray(output_scaling, dtype=np.float64)

    @property
    def n_members(self):
        return self.input_weights.shape[0]

    @property
    def n_inputs(self):
        return self.input_weights.shape[1]

    @property
    def shape(self):
        """Layer widths, inputs to output: e.g. ``(9, 64, 64, 64, 1)``."""
        width = self.input_weights.shape[2]
        return (self.n_inputs, *[width] * (1 + self.hidden_weights.shape[1]), 1)

    @property
    def n_parameters(self):
        return sum(getattr(self, name).size for name in _ARRAY_NAMES[:-1])

    @classmethod
    def from_sklearn(cls, regressors, offset=0.0, scale=1.0):
        """Members from fitted `sklearn.neural_network.MLPRegressor` of one shape (ReLU).

        ``offset`` and ``scale`` undo the standardisation of the target they were
        fitted on.
        """
        shapes = {tuple(w.shape for w in r.coefs_) for r in regressors}
        if len(shapes) != 1 or any(r.activation != "relu" for r in regressors):
            raise ValueError("members must be ReLU networks of one shape")
        widths = {w.shape[1] for w in regressors[0].coefs_[:-1]}
        if len(widths) != 1 or regressors[0].coefs_[-1].shape[1] != 1:
            raise ValueError("members must have hidden layers of one width and one output")
        (width,) = widths
        n_hidden = len(regressors[0].coefs_) - 2
        return cls(
            input_weights=np.stack([r.coefs_[0] for r in regressors]),
            input_biases=np.stack([r.intercepts_[0] for r in regressors]),
            hidden_weights=np.stack([np.stack(r.coefs_[1:-1]) if n_hidden else
                                     np.zeros((0, width, width)) for r in regressors]),
            hidden_biases=np.stack([np.stack(r.intercepts_[1:-1]) if n_hidden else
                                    np.zeros((0, width)) for r in regressors]),
            output_weights=np.stack([r.coefs_[-1][:, 0] for r in regressors]),
            output_biases=np.array([r.intercepts_[-1][0] for r in regressors]),
            output_scaling=np.array([offset, scale], dtype=np.float64),
        )

    def rounded(self, grid):
        """A copy with every array rounded to the nearest multiple of ``grid``.

        Training on another machine's BLAS build changes the last bits of the
        weights (seen: up to 6e-15 between two kinds of processor); rounded to a
        power of two far above that noise (2**-20 for the packaged models), the
        arrays, and everything computed from them, come out the same bytes unless a
        weight lies within that noise of a rounding boundary (`boundary_margin`).
        The packaged networks' outputs move by up to about 3e-6 in ln of the target,
        far below what the intervals resolve. Zeros are stored as +0.0.

        Examples
        --------
        >>> import numpy as np
        >>> from stellar_ml_ages.network import CompactNetwork
        >>> net = CompactNetwork(np.full((1, 1, 1), 0.3), np.zeros((1, 1)),
        ...                      np.zeros((1, 0, 1, 1)), np.zeros((1, 0, 1)),
        ...                      np.ones((1, 1)), np.zeros(1), np.array([0.0, 1.0]))
        >>> float(net.rounded(0.25).input_weights[0, 0, 0])
        0.25
        """
        _check_grid(grid)
        # + 0.0 turns the -0.0 of tiny negative weights into +0.0: same value, and the
        # same bytes whichever side of zero another machine's weight fell.
        return CompactNetwork(*(np.round(getattr(self, name) / grid) * grid + 0.0
                                for name in _ARRAY_NAMES))

    def boundary_margin(self, grid):
        """Smallest distance of any array value from a boundary of ``rounded(grid)``.

        Last-bit noise larger than this could round a value the other way.
        """
        _check_grid(grid)
        steps = np.concatenate([getattr(self, name).ravel() for name in _ARRAY_NAMES]) / grid
        return float(np.min(np.abs(np.abs(steps - np.floor(steps)) - 0.5)) * grid)

    def member(self, index):
        """The network of member ``index`` alone (a one-member `CompactNetwork`)."""
        keep = slice(index, index + 1)
        return CompactNetwork(*(getattr(self, name)[keep] for name in _ARRAY_NAMES[:-1]),
                              self.output_scaling)

    def to_arrays(self, prefix=""):
        """Arrays for `numpy.savez`, keys prefixed with ``prefix``."""
        return {prefix + name: getattr(self, name) for name in _ARRAY_NAMES}

    @classmethod
    def from_arrays(cls, arrays, prefix=""):
        """Inverse of `to_arrays`."""
        return cls(**{name: arrays[prefix + name] for name in _ARRAY_NAMES})

    def validate(self, n_inputs):
        """Check shapes and values, so a corrupted network fails here, not in a kernel."""
        m, k, width = self.input_weights.shape if self.input_weights.ndim == 3 else (0, 0, 0)
        if m == 0 or width == 0:
            raise ValueError("network has no members or no hidden units")
        if k != n_inputs:
            raise ValueError(f"network takes {k} inputs, the model gives it {n_inputs}")
        n_hidden = self.hidden_weights.shape[1] if self.hidden_weights.ndim == 4 else -1
        expected = {"input_biases": (m, width), "hidden_weights": (m, n_hidden, width, width),
                    "hidden_biases": (m, n_hidden, width), "output_weights": (m, width),
                    "output_biases": (m,), "output_scaling": (2,)}
        for name, shape in expected.items():
            if n_hidden < 0 or getattr(self, name).shape != shape:
                raise ValueError(f"network array {name!r} has shape "
                                 f"{getattr(self, name).shape}, expected {shape}")
        if not all(np.all(np.isfinite(getattr(self, name))) for name in _ARRAY_NAMES):
            raise ValueError("network weights are not all finite")
        if self.output_scaling[1] <= 0:
            raise ValueError("network output scale must be positive")

    def predict(self, inputs):
        """Mean over members of ``offset + scale * network(inputs)``, shape (n_rows,).

        Compiled (numba, all cores of ``conf.threads``) where available, else
        `predict_numpy`; the two agree bit for bit.
        """
        from ._kernels import kernels_available, network_kernel, set_threads

        x = self._checked(inputs)
        if not kernels_available():
            return self.predict_numpy(x)
        raw = np.empty(len(x))
        if len(x):
            set_threads()
            network_kernel()(x, self.input_weights, self.input_biases, self.hidden_weights,
                             self.hidden_biases, self.output_weights, self.output_biases, raw)
        offset, scale = self.output_scaling
        return offset + scale * raw

    def _checked(self, inputs):
        """Inputs as a C-contiguous float64 matrix of `n_inputs` columns (the kernel does
        not check bounds: a wrong column count must fail here)."""
        x = np.ascontiguousarray(inputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"network takes rows of {self.n_inputs} inputs, got an array of "
                             f"shape {x.shape}")
        return x

    def predict_numpy(self, inputs, chunk_size=4096):
        """`predict` in NumPy: the reference implementation.

        Sums in the compiled kernel's order (a layer's bias, then its inputs one by
        one), column by column rather than by a matrix product, whose BLAS kernel
        and summation order change with the number of rows: a row's result depends
        on that row alone, and equals the kernel's. Rows go through in blocks of
        ``chunk_size``, which bounds the layers' temporaries (a million rows at once
        would take about 0.5 GB per 64-unit layer) and changes no bit.
        """
        x = self._checked(inputs)
        total = np.zeros(len(x))
        for start in range(0, len(x), chunk_size):
            block = x[start:start + chunk_size]
            for m in range(self.n_members):
                h = np.maximum(row_products(block, self.input_weights[m],
                                            self.input_biases[m]), 0.0)
                for layer in range(self.hidden_weights.shape[1]):
                    h = np.maximum(row_products(h, self.hidden_weights[m, layer],
                                                self.hidden_biases[m, layer]), 0.0)
                total[start:start + chunk_size] += row_products(
                    h, self.output_weights[m], self.output_biases[m])
        offset, scale = self.output_scaling
        # As `predict`: the members' mean first, then the scaling.
        return offset + scale * (total / self.n_members)
