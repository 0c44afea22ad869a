"""Training and evaluation: `llpack train` (`trainer.py`, settings in the torch-free `config.py`) and
`llpack evaluate` (`evaluate.py`: the model against LibRaw on the held-out sets).

May import: everything below it, `toolkit.deploy` included (evaluation runs the model through the
same `Enhancer` a user does).
"""
