"""Training methods as Keras models with a custom `train_step`: NAT, ADV, ADV-EN, ADP, CCE, and the
ensemble-diversity defences GAL, DVERGE and TRS.

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
    GAL       sum_n C(f^n(x), y) + lam log sum_{i<j} exp cos(grad_i, grad_j)   (+ PGD training)
    DVERGE    sum_i sum_{j!=i} C(f^i(x'_j), y_s), x'_j distilled from member j (+ C(f^i(x), y))
    TRS       sum_n C(f^n(x), y) + lambda_a |cos| + lambda_b |grad|^2 at x and TRS's PGD points x~

For NAT, ADV, CCE and DVERGE member n's loss depends on member n's weights only, so one Adam over
the sum is the same as one Adam per member (DVERGE's code has one SGD per member). ADV-EN, ADP, GAL
and TRS couple the members through one loss. GAL and TRS differentiate input gradients with respect
to the weights: their objective runs an inner GradientTape inside train_step's tape
(cce_tf.diversity.input_gradients).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from cce_tf import diversity, losses
from cce_tf.adversary import feature_distillation, pgd, pgd_per_member, smoothing_pgd
from cce_tf.config import DVERGEConfig, GALConfig, PGDConfig, TRSConfig, dverge_defaults
from cce_tf.ensemble import Ensemble, ensemble_logits
from cce_tf.models import feature_layers, feature_model


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

    def adv_labels(self, x_adv, y):
        """The labels of the examples behind objective's adversarial logits, for adv_acc."""
        return y

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
            y_adv = self.adv_labels(x_adv, y)
            self.adv_acc.update_state(tf.tile(y_adv, [tf.shape(logits_adv)[0] // tf.shape(y_adv)[0]]), logits_adv)
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
        en_cross = ensemble_logits(tf.transpose(z_cross, [1, 0, 2, 3]))        # members on axis -3: [N(i), B, C]
        return loss, ensemble_logits(z_clean), tf.reshape(en_cross, [-1, tf.shape(en_cross)[-1]])


class GAL(Trainer):
    """GAL: the members' cross-entropies plus the gradient alignment loss (diversity.gal_loss); with
    gal.adv, also sum_n C(f^n(x_adv), y) on PGD examples against the ensemble (DVERGE repo's GAL
    --plus-adv), crafted with the data set's training PGD."""

    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, gal: GALConfig = GALConfig(), **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.gal = gal

    @property
    def metrics(self):
        return [self.loss_tracker, self.acc] + ([self.adv_acc] if self.gal.adv else [])

    def adversarial(self, x, y):
        return super().adversarial(x, y) if self.gal.adv else None

    def objective(self, x, x_adv, y):
        z, grads = diversity.input_gradients(self.ensemble.members, x, y, training=True)
        loss = diversity.gal_loss(y, z, grads, self.gal.lam)
        if x_adv is None:
            return loss, ensemble_logits(z), None
        z_adv = self.ensemble.member_logits(x_adv, training=True)
        loss += tf.reduce_sum(tf.reduce_mean(losses.cross_entropy(y, z_adv), axis=-1))
        return loss, ensemble_logits(z), ensemble_logits(z_adv)


class DVERGE(Trainer):
    """DVERGE: member i learns member j's distilled examples with the source labels, for every j != i
    (diversity.dverge_losses; the "plus" variant adds member i's clean cross-entropy).

    Each step pairs the batch x with a random permutation of itself, (x_s, y_s), and draws one of
    the members' candidate feature layers (cce_tf.models.feature_layers), both from `rng` so a
    resumed run draws what it would have drawn. adv_acc is the ensemble on the distilled examples
    x'_j against y_s, pooled over j: how often the examples that fool one member fool the ensemble.
    """

    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, dverge: DVERGEConfig, **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.dverge = dverge
        self.feature_fns = [feature_model(m) for m in ensemble.members]
        self.n_layers = len(feature_layers(ensemble.members[0]))

    def adversarial(self, x, y):
        order = tf.argsort(self.rng.uniform(tf.shape(y)))
        x_s, y_s = tf.gather(x, order), tf.gather(y, order)
        layer = self.rng.uniform([], 0, self.n_layers, dtype=tf.int32)
        return feature_distillation(self.feature_fns, x_s, x, layer, self.dverge.distill), y_s

    def adv_labels(self, x_adv, y):
        return x_adv[1]

    def objective(self, x, x_adv, y):
        x_distilled, y_s = x_adv
        n = len(self.ensemble.members)
        plus = self.dverge.variant == "plus"
        # Member i sees every x'_j (and x for "plus") in one pass.
        x_all = tf.concat(tf.unstack(x_distilled, num=n) + ([x] if plus else []), axis=0)
        z = self.ensemble.member_logits(x_all, training=True)
        z = tf.stack(tf.split(z, n + int(plus), axis=1), axis=1)                  # [N(i), N(j)(+1), B, C]
        z_clean = z[:, n] if plus else tf.stop_gradient(self.ensemble.member_logits(x, training=False))
        per_member = diversity.dverge_losses(y_s, z[:, :n], z_clean if plus else None, y)
        en_distilled = ensemble_logits(tf.transpose(z[:, :n], [1, 0, 2, 3]))  # [N(j), B, C]
        return (tf.reduce_sum(per_member), ensemble_logits(z_clean),
                tf.reshape(en_distilled, [-1, tf.shape(en_distilled)[-1]]))


class TRS(Trainer):
    """TRS: the members' cross-entropies, the mean |cos| of their input gradients on x, and the mean
    squared input-gradient norm at the smoothing points (diversity.trs_loss).

    As TRS's code, the first half of the batch stays clean and the second half is replaced by its
    smoothing PGD points x~ (adversary.smoothing_pgd), whose radius grows linearly from trs.eps at
    the first epoch towards trs.eps_end: epoch e uses eps + (eps_end - eps) e / epochs, with e read
    from the optimizer's step count (checkpointed), so a resumed run uses the radius it would have.
    Without steps_per_epoch and epochs the radius stays trs.eps. adv_acc is the ensemble on x~.
    """

    def __init__(self, ensemble: Ensemble, pgd_cfg: PGDConfig, trs: TRSConfig = TRSConfig(),
                 steps_per_epoch: int | None = None, epochs: int | None = None, **kwargs):
        super().__init__(ensemble, pgd_cfg, **kwargs)
        self.trs, self.steps_per_epoch, self.epochs = trs, steps_per_epoch, epochs

    def smoothing_eps(self) -> tf.Tensor:
        """The smoothing PGD's radius for the current step."""
        if not (self.steps_per_epoch and self.epochs):
            return tf.constant(self.trs.eps)
        epoch = tf.cast(self.optimizer.iterations // self.steps_per_epoch, tf.float32)
        return self.trs.eps + (self.trs.eps_end - self.trs.eps) * epoch / self.epochs

    def adversarial(self, x, y):
        half = tf.shape(x)[0] // 2
        return smoothing_pgd(self.ensemble.members, x[half:], y[half:], self.smoothing_eps(),
                             self.trs.nb_iter, self.rng)

    def adv_labels(self, x_adv, y):
        return y[tf.shape(y)[0] // 2:]

    def objective(self, x, x_adv, y):
        b, half = tf.shape(x)[0], tf.shape(x)[0] // 2
        z, grads = diversity.input_gradients(self.ensemble.members, tf.concat([x, x_adv], axis=0),
                                             tf.concat([y, y[half:]], axis=0), training=True)
        grads_smooth = tf.concat([grads[:, :half], grads[:, b:]], axis=1)     # x's first half, then x~
        loss = diversity.trs_loss(y, z[:, :b], grads[:, :b], grads_smooth, self.trs.lambda_a, self.trs.lambda_b)
        return loss, ensemble_logits(z[:, :b]), ensemble_logits(z[:, b:])


def make_trainer(method: str, ensemble: Ensemble, pgd_cfg: PGDConfig, lambda_pm: float = 1.0,
                 lambda_dm: float = 1.0, adv_en_member_sum: bool = False, seed: int = 0,
                 gal: GALConfig = GALConfig(), dverge: DVERGEConfig | None = None, trs: TRSConfig = TRSConfig(),
                 steps_per_epoch: int | None = None, epochs: int | None = None) -> Trainer:
    """The Trainer for a resolved method name (see config.resolve_method); `seed` seeds PGD (and
    DVERGE's pairing and layer draws). `dverge` defaults to DVERGE's CIFAR-10 distillation;
    `steps_per_epoch` and `epochs` give TRS its radius schedule."""
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
    if method == "gal":
        return GAL(ensemble, pgd_cfg, gal=gal, seed=seed)
    if method == "dverge":
        return DVERGE(ensemble, pgd_cfg, dverge=dverge or DVERGEConfig(dverge_defaults("cifar10")), seed=seed)
    if method == "trs":
        return TRS(ensemble, pgd_cfg, trs=trs, steps_per_epoch=steps_per_epoch, epochs=epochs, seed=seed)
    raise ValueError(f"unknown method {method!r}")
