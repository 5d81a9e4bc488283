"""Training methods as Keras models with a custom `train_step`: NAT, ADV, ADV-EN, ADP and CCE.

Usage::

    trainer = make_trainer("cce", ensemble, pgd_cfg, lambda_pm=1.0, lambda_dm=1.0, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(train_ds, epochs=...)

Parts:
    Trainer   the shared train_step: craft x_adv (a constant), GradientTape over the method's
              objective, one Adam update; metrics loss, acc (clean), adv_acc; `rng`, the seeded
              generator of PGD's random starts (checkpoint it to resume a run exactly)
    NAT       sum_n C(f^n(x), y)                              natural training
    ADV       C(f(x), y) + C(f(x_adv), y), N = 1             PGD adversarial training
    ADVEN     C(f^en(x), y) + C(f^en(x_adv), y)              the ensemble trained as one model
              (or, with member_sum=True, the official code's sum_n [C(f^n(x), y) + C(f^n(x_adv), y)])
    ADP       adp_loss(x) + adp_loss(x_adv)                  ADP_{2,0.5} with adversarial training
    CCE       sum_n L^n of Eq. 5, x_a^n crafted against member n alone

For NAT, ADV and CCE member n's loss depends on member n's weights only, so one Adam over the sum
is the same as one Adam per member. ADV-EN and ADP couple the members through one loss.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from cce_tf import losses
from cce_tf.adversary import pgd, pgd_per_member
from cce_tf.config import PGDConfig
from cce_tf.ensemble import Ensemble, ensemble_logits


class Trainer(keras.Model):
    """Wraps an Ensemble; subclasses say how x_adv is crafted and what the objective is."""

    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.ensemble = ensemble
        self.pgd_cfg = pgd_cfg
        # Its own generator, not the global random state: a checkpoint can hold its state.
        self.rng = tf.random.Generator.from_seed(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc = keras.metrics.SparseCategoricalAccuracy(name="acc")
        self.adv_acc = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")

    @property
    def metrics(self):
        return [self.loss_tracker, self.acc, self.adv_acc]

    def call(self, x, training: bool = False):
        return self.ensemble(x, training=training)

    def adversarial(self, x, y):
        """x_adv for this batch (a constant to the update), or None."""
        return pgd(lambda z: self.ensemble(z, training=False), x, y, self.pgd_cfg, self.rng)

    def objective(self, x, x_adv, y):
        """(loss, ensemble logits on x, ensemble logits on x_adv or None), in training mode."""
        raise NotImplementedError

    def train_step(self, data):
        x, y = data
        x_adv = self.adversarial(x, y)
        with tf.GradientTape() as tape:
            loss, logits, logits_adv = self.objective(x, x_adv, y)
            loss += tf.add_n(self.ensemble.losses) if self.ensemble.losses else 0.0  # ResNet's L2
            # Gradients are summed over replicas: scale so the update is the global-batch mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.ensemble.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        self.acc.update_state(y, logits)
        if logits_adv is not None:
            # CCE pools the ensemble on every member's x_a^i ([N*B, C]): the labels repeat.
            self.adv_acc.update_state(tf.tile(y, [tf.shape(logits_adv)[0] // tf.shape(y)[0]]), logits_adv)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        logits = self.ensemble(x, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(losses.cross_entropy(y, logits)))
        self.acc.update_state(y, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.acc)}


def _members_on(ensemble: Ensemble, x, x_adv):
    """Member logits on x and x_adv in one pass per member: two [N, B, C] tensors."""
    z = ensemble.member_logits(tf.concat([x, x_adv], axis=0), training=True)
    return tf.split(z, 2, axis=1)


class NAT(Trainer):
    @property
    def metrics(self):
        return [self.loss_tracker, self.acc]  # no adversary, so no adv_acc

    def adversarial(self, x, y):
        return None

    def objective(self, x, x_adv, y):
        z = self.ensemble.member_logits(x, training=True)
        loss = tf.reduce_sum(tf.reduce_mean(losses.cross_entropy(y, z), axis=-1))
        return loss, ensemble_logits(z), None


class ADV(Trainer):
    def objective(self, x, x_adv, y):
        z, z_adv = _members_on(self.ensemble, x, x_adv)
        loss = tf.reduce_mean(losses.cross_entropy(y, z[0]) + losses.cross_entropy(y, z_adv[0]))
        return loss, z[0], z_adv[0]


class ADVEN(Trainer):
    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, member_sum: bool = False, **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.member_sum = member_sum

    def objective(self, x, x_adv, y):
        z, z_adv = _members_on(self.ensemble, x, x_adv)
        en, en_adv = ensemble_logits(z), ensemble_logits(z_adv)
        if self.member_sum:
            per_sample = tf.reduce_sum(losses.cross_entropy(y, z) + losses.cross_entropy(y, z_adv), axis=0)
        else:
            per_sample = losses.cross_entropy(y, en) + losses.cross_entropy(y, en_adv)
        return tf.reduce_mean(per_sample), en, en_adv


class ADP(Trainer):
    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, alpha: float = 2.0, beta: float = 0.5,
                 **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.alpha, self.beta = alpha, beta

    def objective(self, x, x_adv, y):
        z, z_adv = _members_on(self.ensemble, x, x_adv)
        loss = (losses.adp_loss(y, z, self.alpha, self.beta)
                + losses.adp_loss(y, z_adv, self.alpha, self.beta))
        return loss, ensemble_logits(z), ensemble_logits(z_adv)


class CCE(Trainer):
    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, lambda_pm: float = 1.0,
                 lambda_dm: float = 1.0, **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.lambda_pm, self.lambda_dm = lambda_pm, lambda_dm

    def adversarial(self, x, y):
        return pgd_per_member(self.ensemble.members, x, y, self.pgd_cfg, self.rng)  # [N, B, ...]

    def objective(self, x, x_adv, y):
        n = len(self.ensemble.members)
        # Member n sees x and every x_a^i in one pass of (N+1)B images.
        x_all = tf.concat([x] + tf.unstack(x_adv, num=n), axis=0)
        z = self.ensemble.member_logits(x_all, training=True)                  # [N, (N+1)B, C]
        z = tf.stack(tf.split(z, n + 1, axis=1), axis=1)                       # [N, N+1, B, C]
        z_clean, z_cross = z[:, 0], z[:, 1:]
        loss = tf.reduce_sum(losses.cce_losses(y, z_clean, z_cross, self.lambda_pm, self.lambda_dm))
        # adv_acc: the ensemble on the members' own adversarial examples x_a^i, pooled over i.
        en_cross = ensemble_logits(z_cross)                                    # [N(i), B, C]
        return loss, ensemble_logits(z_clean), tf.reshape(en_cross, [-1, tf.shape(en_cross)[-1]])


def make_trainer(method: str, ensemble: Ensemble, pgd_cfg: PGDConfig, lambda_pm: float = 1.0,
                 lambda_dm: float = 1.0, adv_en_member_sum: bool = False, seed: int = 0) -> Trainer:
    """The Trainer for a resolved method name (see config.resolve_method); `seed` seeds PGD."""
    if method == "nat":
        return NAT(ensemble, pgd_cfg, seed=seed)
    if method == "adv":
        return ADV(ensemble, pgd_cfg, seed=seed)
    if method == "adv-en":
        return ADVEN(ensemble, pgd_cfg, member_sum=adv_en_member_sum, seed=seed)
    if method == "adp":
        return ADP(ensemble, pgd_cfg, seed=seed)
    if method == "cce":
        return CCE(ensemble, pgd_cfg, lambda_pm=lambda_pm, lambda_dm=lambda_dm, seed=seed)
    raise ValueError(f"unknown method {method!r}")
