"""The analyses of a trained run (or of several): the attack suite, transferability, entropy
detection, detection against detector-aware attackers, the black-box matrix. One module each."""
