"""Optimizers for the paper's training settings.

The paper trains with "RMSprop with 0.9 momentum", which has no exact Chainer
optimizer. ``train_cifar.py`` defaults to
``chainer.optimizers.RMSprop(lr, alpha=0.9)`` (DESIGN.md section 3 explains
why) and offers :class:`RMSpropTF`, the TensorFlow / TF-slim reading, as an
option.
"""
import numpy

import chainer
from chainer.backends import cuda
from chainer import optimizer


_default_hyperparam = optimizer.Hyperparameter()
_default_hyperparam.lr = 0.01
_default_hyperparam.decay = 0.9
_default_hyperparam.momentum = 0.9
_default_hyperparam.eps = 1.0
_default_hyperparam.initial_ms = 1.0


class RMSpropTFRule(optimizer.UpdateRule):

    """Update rule of :class:`RMSpropTF` (see there for the equations).

    Args:
        parent_hyperparam (~chainer.optimizer.Hyperparameter): Hyperparameter
            that provides the default values.
        lr (float): Learning rate.
        decay (float): Decay rate of the mean square.
        momentum (float): Momentum coefficient.
        eps (float): Added to the mean square inside the square root.
        initial_ms (float): Initial value of the mean square.

    """

    is_elementwise = True

    def __init__(self, parent_hyperparam=None, lr=None, decay=None,
                 momentum=None, eps=None, initial_ms=None):
        super(RMSpropTFRule, self).__init__(
            parent_hyperparam or _default_hyperparam)
        for name, value in (('lr', lr), ('decay', decay),
                            ('momentum', momentum), ('eps', eps),
                            ('initial_ms', initial_ms)):
            if value is not None:
                setattr(self.hyperparam, name, value)

    def init_state(self, param):
        xp = param.device.xp
        with chainer.using_device(param.device):
            self.state['ms'] = xp.full_like(
                param.data, self.hyperparam.initial_ms)
            self.state['mom'] = xp.zeros_like(param.data)

    def update_core_cpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        ms = self.state['ms']
        mom = self.state['mom']
        ms *= hp.decay
        ms += (1 - hp.decay) * grad * grad
        mom *= hp.momentum
        mom += hp.lr * grad / numpy.sqrt(ms + hp.eps)
        param.data -= mom

    def update_core_gpu(self, param):
        grad = param.grad
        if grad is None:
            return
        hp = self.hyperparam
        cuda.elementwise(
            'T grad, T lr, T decay, T momentum, T eps',
            'T param, T ms, T mom',
            '''ms = decay * ms + (1 - decay) * grad * grad;
               mom = momentum * mom + lr * grad / sqrt(ms + eps);
               param -= mom;''',
            'mixnorm_rmsprop_tf')(
                grad, hp.lr, hp.decay, hp.momentum, hp.eps, param.data,
                self.state['ms'], self.state['mom'])


class RMSpropTF(optimizer.GradientMethod):

    """RMSprop with momentum as in TensorFlow 1 / TF-slim.

    With gradient :math:`g`, per element:

    .. math::

        ms  &\\leftarrow \\rho\\, ms + (1 - \\rho)\\, g^2, \\\\
        mom &\\leftarrow \\mu\\, mom
             + \\eta\\, g / \\sqrt{ms + \\epsilon}, \\\\
        w   &\\leftarrow w - mom,

    where ``ms`` starts at ``initial_ms`` (TensorFlow 1 starts it at one)
    and ``mom`` at zero. The defaults (decay 0.9, momentum 0.9, epsilon 1.0)
    are TF-slim's image-classification settings, the usual reading of
    "RMSprop with 0.9 momentum".

    Args:
        lr (float): Learning rate :math:`\\eta`.
        decay (float): Decay rate :math:`\\rho` of the mean square.
        momentum (float): Momentum :math:`\\mu`.
        eps (float): :math:`\\epsilon`, added inside the square root.
        initial_ms (float): Initial mean square.

    .. seealso:: :class:`chainer.optimizers.RMSprop`

    """

    def __init__(self, lr=_default_hyperparam.lr,
                 decay=_default_hyperparam.decay,
                 momentum=_default_hyperparam.momentum,
                 eps=_default_hyperparam.eps,
                 initial_ms=_default_hyperparam.initial_ms):
        super(RMSpropTF, self).__init__()
        if not 0 <= decay < 1:
            raise ValueError('decay must be in [0, 1), got {}'.format(decay))
        if not 0 <= momentum < 1:
            raise ValueError('momentum must be in [0, 1), got {}'.format(
                momentum))
        if eps <= 0:
            raise ValueError('eps must be positive, got {}'.format(eps))
        self.hyperparam.lr = lr
        self.hyperparam.decay = decay
        self.hyperparam.momentum = momentum
        self.hyperparam.eps = eps
        self.hyperparam.initial_ms = initial_ms

    lr = optimizer.HyperparameterProxy('lr')
    decay = optimizer.HyperparameterProxy('decay')
    momentum = optimizer.HyperparameterProxy('momentum')
    eps = optimizer.HyperparameterProxy('eps')
    initial_ms = optimizer.HyperparameterProxy('initial_ms')

    def create_update_rule(self):
        return RMSpropTFRule(self.hyperparam)
