"""One module per implementation of ConvLSTM2D (installed as ``convlstm_conformance.adapters``).

Each module holds an adapter (its capability declaration, its mapping of the
canonical Keras-layout weights, its call) and the :class:`AdapterEntry` that
registers it under the ``convlstm_conformance.adapters`` entry-point group in
``pyproject.toml``, exactly as a third party registers its own.  Frameworks
are imported inside the adapter that needs them, never at module import.
Shared glue lives in helpers named for it (``jax_glue``, ``reference_glue``).
"""
