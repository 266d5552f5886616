"""The conformance suite: the pytest modules ``pytest conformance/`` runs.

Installed as ``convlstm_conformance.suite`` (``pytest --pyargs
convlstm_conformance.suite`` or ``convlstm-conformance run`` from any
directory).  One module per area of the spec, each listing the clause kinds
it checks (``CLAUSE_KINDS``); ``expectations/`` holds the known divergences of
the registered implementations and ``golden/`` the documentation's examples.
The plugin that parametrizes and records these tests is
``convlstm_conformance.plugin``.
"""
