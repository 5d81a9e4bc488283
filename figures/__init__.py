"""One module per paper figure, each a CLI: ``python -m figures.NAME --run_dir RUN``.

    entropy_histogram   Fig 2: entropy of the ensemble prediction, clean vs adversarial
    roc_attacks         Fig 3: ROC of entropy detection under PGD, BIM, MIM
    roc_eps             Fig 4: ROC of entropy detection under PGD of several strengths
    predictions         Figs 1, 5: a benign image and its adversarial, with f^1 .. f^N and f^en
    loss_surface        Figs 6-8: loss surface and predicted labels around an adversarial example
    training_curves     loss and accuracies per epoch (history.json)

Each writes RUN/figures/NAME.png and .pdf (matplotlib, Agg backend) and reads eval/ results where
they exist, computing them (through eval/) where they do not.
"""
