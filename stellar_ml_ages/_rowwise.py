"""Matrix products summed row by row in a fixed order (shared by the model, the
network's NumPy twin and the state classifier)."""

import numpy as np

__all__ = ["row_products"]


def row_products(matrix, coefficients, initial=0.0):
    """``initial + matrix @ coefficients``, each row summed column by column in column order.

    A matrix product's BLAS kernel, and with it the order of the sums, depends on the
    number of rows, so a star's last bits would depend on the table it came in (and
    the networks pass them on). Here a row's result depends on that row alone. The
    sum starts from ``initial`` (a network layer's biases: the compiled kernel's
    order) and adds one column's products at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from stellar_ml_ages.model import row_products
    >>> row_products(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0], [-1.0]]))
    array([[-1.],
           [-1.]])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    coefficients = np.asarray(coefficients, dtype=np.float64)
    total = np.empty((len(matrix), *coefficients.shape[1:]))
    total[...] = initial
    term = np.empty_like(total)
    for column, coefficient in zip(matrix.T, coefficients, strict=True):
        np.multiply(column[:, None] if coefficients.ndim == 2 else column, coefficient,
                    out=term)
        total += term
    return total
