"""The contract of ConvLSTM2D as data (``convlstm2d.yaml``, checked against ``schema.yaml``).

A package only so the YAML files ship inside ``convlstm_conformance`` as
package data; ``convlstm_conformance.spec`` reads them.
"""
