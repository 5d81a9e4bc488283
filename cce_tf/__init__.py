"""cce-tf: the Crossing Collaborative Ensemble (Bui et al., AAAI 2021) in TensorFlow 2 / Keras 3.

Train with `python -m cce_tf.train`; the modules are listed in DESIGN.md (data, models, ensemble,
losses, adversary, methods, config, train).
"""
