"""Training presets: the rows of the paper's tables, as data.

Every row of a paper table is a :class:`Preset`: the model, which norm
layers become Mixture Normalization (MN) and with which ``K`` and EM
iterations, and the training settings (optimizer, learning rate, weight
decay, learning-rate schedule, batch size, epochs). Row-specific numbers are
read from the transcribed tables (:func:`mn_chainer.paper.load_paper_results`);
the settings the paper states once for a whole table (e.g. "RMSprop, lr
x0.93 every 2 epochs, batch 256, 100 epochs" for Table II) are constants of
that table's builder.

A preset is named ``'<table>:<row>'`` (``'table2:MN-2'``). The short form
``'MN-2'`` resolves within the default table of the model
(:data:`DEFAULT_TABLES`, e.g. ``cifar_cnn`` -> ``table2``). Rows are per
dataset: Table II has ``MN-5``..``MN-8`` only for CIFAR-100.

Adding a table (another model or experiment) takes one builder::

    @register_table('table4', 'Table IV: Inception-V3 on CIFAR',
                    model='inception_v3', datasets=('cifar10', 'cifar100'),
                    default=True)
    def _table4(paper, dataset):
        table = paper['table4_inception_v3']
        return collections.OrderedDict(
            (row, dict(..., **_paper_row(entry))) for row, entry in ...)

A builder takes the loaded tables and a dataset name and returns an ordered
mapping ``row -> dict`` of the :class:`Preset` fields other than ``id``,
``table``, ``row``, ``dataset`` and ``model``.
"""
import collections
import dataclasses
import typing

import mn_chainer.paper


#: Dataset used when none is given.
DEFAULT_DATASET = 'cifar10'

#: Model whose default table short preset names resolve in when no model is
#: given.
DEFAULT_MODEL = 'cifar_cnn'

#: Training images per epoch in every experiment of the paper: all 50,000
#: of the CIFAR-10/100 training set.
PAPER_N_TRAIN = 50000


@dataclasses.dataclass(frozen=True)
class LRSchedule(object):

    """A learning-rate schedule, in epochs.

    Two kinds cover the paper's experiments:

    * ``'exponential'``: multiply the learning rate by ``rate`` every
      ``every`` epochs (Tables II and IV: x0.93 every 2 or 4 epochs);
    * ``'step'``: multiply it by ``rate`` when training reaches each fraction
      in ``at`` of its length (Table VI, DenseNet: x0.1 at 50% and 75%).

    Attributes:
        kind (str): ``'exponential'`` or ``'step'``.
        rate (float): The multiplier applied at each shift.
        every (int or None): Epochs between two shifts (``'exponential'``).
        at (tuple of float): Fractions of the training length in ``(0, 1)``
            (``'step'``).

    """

    kind: str
    rate: float
    every: typing.Optional[int] = None
    at: typing.Tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind == 'exponential':
            if self.every is None or self.every < 1 or self.at:
                raise ValueError(
                    'an exponential schedule needs every >= 1 and no at, '
                    'got every={!r}, at={!r}'.format(self.every, self.at))
        elif self.kind == 'step':
            if self.every is not None or not self.at or not all(
                    0 < f < 1 for f in self.at):
                raise ValueError(
                    'a step schedule needs fractions 0 < at < 1 and no '
                    'every, got every={!r}, at={!r}'.format(
                        self.every, self.at))
        else:
            raise ValueError(
                'unknown schedule kind {!r}; valid kinds: exponential, '
                'step'.format(self.kind))
        if not self.rate > 0:
            raise ValueError('rate must be positive, got {!r}'.format(
                self.rate))

    def shift_epochs(self, n_epochs):
        """Returns the epochs (1-based ends) after which the lr is shifted.

        Args:
            n_epochs (int): The length of training in epochs.

        Returns:
            list of int: For ``'exponential'``, ``every, 2 * every, ...``
            below ``n_epochs``; for ``'step'``, ``round(f * n_epochs)`` for
            each fraction ``f`` (duplicates and zeros removed).

        """
        if self.kind == 'exponential':
            return list(range(self.every, n_epochs, self.every))
        return sorted({int(round(f * n_epochs)) for f in self.at} - {0})

    def as_dict(self):
        return {'kind': self.kind, 'rate': self.rate, 'every': self.every,
                'at': list(self.at)}


@dataclasses.dataclass(frozen=True)
class Preset(object):

    """One row of a paper table, resolved for one dataset.

    Attributes:
        id (str): ``'<table>:<row>'``.
        table (str): Table id (``'table2'``).
        row (str): The paper's row label (``'MN-2'``).
        dataset (str): ``'cifar10'`` or ``'cifar100'``.
        model (str): Registered model name (see :mod:`models`).
        mn_layers (tuple of str): The layers the paper equips with MN
            (model layer names, expanded by ``model.expand_norm_layer``);
            empty for batch-normalized rows.
        n_components (int or None): ``K``.
        em_iter (int or None): The paper's "EM iter." (K-means plus EM
            iterations, see :func:`mn_chainer.gmm.split_em_iter`).
        lr (float): Initial learning rate.
        weight_decay (float): Weight decay (L2) coefficient.
        optimizer (str): ``'rmsprop'`` or ``'nesterov'`` (see
            ``train_cifar.py`` for the mapping to Chainer optimizers).
        lr_schedule (LRSchedule): The learning-rate schedule.
        batchsize (int): Mini-batch size.
        epoch (int): Number of training epochs.
        paper (dict): What the paper reports for the row (e.g.
            ``checkpoints_epochs`` and the maximum test accuracy ``acc``
            after each), for comparisons.

    """

    id: str
    table: str
    row: str
    dataset: str
    model: str
    mn_layers: typing.Tuple[str, ...]
    n_components: typing.Optional[int]
    em_iter: typing.Optional[int]
    lr: float
    weight_decay: float
    optimizer: str
    lr_schedule: LRSchedule
    batchsize: int
    epoch: int
    paper: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def norm(self):
        """``'mn'`` if the row uses Mixture Normalization, else ``'bn'``."""
        return 'mn' if self.mn_layers else 'bn'

    def as_dict(self):
        """Returns the preset as a JSON-serializable dictionary."""
        d = dataclasses.asdict(self)
        d['mn_layers'] = list(self.mn_layers)
        d['lr_schedule'] = self.lr_schedule.as_dict()
        d['norm'] = self.norm
        return d


_Table = collections.namedtuple(
    '_Table', ['table_id', 'title', 'model', 'datasets', 'builder'])

#: Registered tables: id -> spec (in registration order).
_TABLES = collections.OrderedDict()

#: Model name -> id of the table its short preset names resolve in.
DEFAULT_TABLES = {}


def register_table(table_id, title, model, datasets, default=False):
    """Decorator registering a table builder (see the module docstring).

    Args:
        table_id (str): Id used in preset names (``'table2'``); no ``':'``.
        title (str): One-line description for listings.
        model (str): Registered model name the rows train.
        datasets (tuple of str): Datasets the table has rows for.
        default (bool): Make it the table short preset names of ``model``
            resolve in.

    """
    if ':' in table_id:
        raise ValueError('table id must not contain ":": {!r}'.format(
            table_id))

    def decorator(builder):
        if table_id in _TABLES:
            raise ValueError('table {!r} is already registered'.format(
                table_id))
        _TABLES[table_id] = _Table(table_id, title, model, tuple(datasets),
                                   builder)
        if default:
            DEFAULT_TABLES[model] = table_id
        return builder
    return decorator


def tables():
    """Returns the ids of the registered tables."""
    return list(_TABLES)


def _get_table(table_id):
    try:
        return _TABLES[table_id]
    except KeyError:
        raise ValueError('unknown paper table {!r}; valid tables: {}'.format(
            table_id, ', '.join(_TABLES)))


def _build(table_id, dataset):
    table = _get_table(table_id)
    if dataset not in table.datasets:
        raise ValueError(
            '{} has no rows for dataset {!r}; it covers: {}'.format(
                table.title, dataset, ', '.join(table.datasets)))
    rows = table.builder(mn_chainer.paper.load_paper_results(), dataset)
    return collections.OrderedDict(
        (row, Preset(id='{}:{}'.format(table_id, row), table=table_id,
                     row=row, dataset=dataset, model=table.model, **fields))
        for row, fields in rows.items())


def table_rows(table_id, dataset=DEFAULT_DATASET):
    """Returns the row labels of a table for a dataset, in paper order."""
    return list(_build(table_id, dataset))


def list_presets(dataset=DEFAULT_DATASET, model=None):
    """Returns the ids of every preset available for a dataset.

    Args:
        dataset (str): ``'cifar10'`` or ``'cifar100'``.
        model (str or None): Only tables training this model.

    """
    ids = []
    for table in _TABLES.values():
        if model is not None and table.model != model:
            continue
        if dataset in table.datasets:
            ids.extend(p.id for p in _build(table.table_id, dataset).values())
    return ids


def get_preset(name, dataset=DEFAULT_DATASET, model=None):
    """Resolves a preset name for a dataset.

    Args:
        name (str): ``'<table>:<row>'`` (``'table2:MN-2'``) or a row label
            alone (``'MN-2'``), which resolves within the default table of
            ``model`` (of :data:`DEFAULT_MODEL` when ``model`` is None).
        dataset (str): The dataset whose row is wanted.
        model (str or None): The model the caller trains; a full name whose
            table trains another model is an error.

    Returns:
        Preset: The row's settings.

    Raises:
        ValueError: For an unknown table or row (the message lists the valid
            ones), a row the table has only for other datasets, or a model
            mismatch.

    """
    if ':' in name:
        table_id, row = name.split(':', 1)
        table = _get_table(table_id)
        if model is not None and model != table.model:
            raise ValueError(
                'preset {!r} trains model {!r}, not {!r}'.format(
                    name, table.model, model))
    else:
        owner = DEFAULT_MODEL if model is None else model
        if owner not in DEFAULT_TABLES:
            raise ValueError(
                'model {!r} has no default paper table; name the preset '
                'as <table>:<row> (tables: {})'.format(
                    owner, ', '.join(_TABLES)))
        table_id, row = DEFAULT_TABLES[owner], name
        table = _TABLES[table_id]
    rows = _build(table_id, dataset)
    if row not in rows:
        elsewhere = [d for d in table.datasets if d != dataset
                     and row in table.builder(
                         mn_chainer.paper.load_paper_results(), d)]
        hint = ' (it exists for {})'.format(', '.join(elsewhere)) \
            if elsewhere else ''
        raise ValueError(
            '{} has no row {!r} for {}{}; valid rows: {}'.format(
                table.title, row, dataset, hint, ', '.join(rows)))
    return rows[row]


def _paper_row(entry):
    """Preset fields shared by the rows of Tables II and IV."""
    mn = entry['mn']
    return dict(
        mn_layers=tuple(mn['layers']) if mn else (),
        n_components=int(mn['K']) if mn else None,
        em_iter=int(mn['em_iter']) if mn else None,
        lr=float(entry['lr']),
        weight_decay=float(entry['wd']),
    )


#: Table II's training setting (paper section 4.2, DESIGN.md section 3).
_TABLE2_TRAINING = dict(
    optimizer='rmsprop',
    lr_schedule=LRSchedule('exponential', 0.93, every=2),
    batchsize=256,
    epoch=100,
)


def _accuracy_table_rows(paper, dataset, table_key, steps_key, training):
    """Rows of an accuracy table (II or IV) with its steps table (III or V).

    Every row carries the paper's accuracies at the checkpoints and, where
    the steps table has the row, the updates (x1e4) to reach its BN target.
    """
    table = paper[table_key]
    steps = paper.get(steps_key, {}).get(dataset, {})
    rows = collections.OrderedDict()
    for row, entry in table[dataset].items():
        reported = {'checkpoints_epochs': list(table['checkpoints_epochs']),
                    'acc': list(entry['acc'])}
        if row in steps.get('rows', {}):
            reported['steps_target'] = steps['target']
            reported['steps'] = steps['rows'][row]['steps']
        rows[row] = dict(paper=reported, **_paper_row(entry), **training)
    return rows


@register_table('table2', 'Table II (CIFAR CNN)', model='cifar_cnn',
                datasets=('cifar10', 'cifar100'), default=True)
def _table2(paper, dataset):
    # Table III: updates (x1e4) to reach the BN-2 maximum.
    return _accuracy_table_rows(paper, dataset, 'table2_cifar_cnn',
                                'table3_cifar_cnn_steps', _TABLE2_TRAINING)


# ---------------------------------------------------------------------------
# Inception-V3 (Tables IV-VI) and DenseNet (paper section 4.4): issue 6.
# This section is maintained with models/inception_v3.py and
# models/densenet.py; the tests are tests/test_presets_inception_densenet.py.

#: Table IV's training setting (paper section 4.3, DESIGN.md section 3).
_TABLE4_TRAINING = dict(
    optimizer='rmsprop',
    lr_schedule=LRSchedule('exponential', 0.93, every=4),
    batchsize=128,
    epoch=200,
)


@register_table('table4', 'Table IV (Inception-V3)', model='inception_v3',
                datasets=('cifar10', 'cifar100'), default=True)
def _table4(paper, dataset):
    # Table V: updates (x1e4) to reach the BN-1 maximum.
    return _accuracy_table_rows(paper, dataset, 'table4_inception_v3',
                                'table5_inception_v3_steps', _TABLE4_TRAINING)


#: Table VI's lr decay policies: the keys of its section in the paper data,
#: ``decay_<rate>_at_<fraction>_<fraction>...``. Each policy is a table of
#: its own (``table6_<key>``, rows ``BN`` and ``MN``).
TABLE6_POLICIES = ('decay_0.1_at_0.5_0.75', 'decay_0.2_at_0.3_0.6_0.8')

#: Table VI's setting (paper section 4.3, "Choice of optimization
#: technique"): Nesterov, batch 256, lr 0.14, 150 epochs, MN at inc2/1 and
#: inc3/0. The paper states neither K, the EM iterations nor the weight
#: decay of these runs; the presets use K = 5 and EM iter 2 (Table IV's
#: CIFAR-100 MN-4/MN-5) and Table IV's weight decay 5e-4.
_TABLE6_TRAINING = dict(
    optimizer='nesterov',
    lr=0.14,
    weight_decay=5e-4,
    batchsize=256,
    epoch=150,
)
_TABLE6_MN = dict(mn_layers=('inc2/1', 'inc3/0'), n_components=5, em_iter=2)
_TABLE6_ASSUMED = ('n_components', 'em_iter', 'weight_decay')


def _policy_schedule(key):
    """``'decay_0.1_at_0.5_0.75'`` -> step schedule x0.1 at 50% and 75%."""
    parts = key.split('_')
    if len(parts) < 4 or parts[0] != 'decay' or parts[2] != 'at':
        raise ValueError('not an lr decay policy key: {!r}'.format(key))
    return LRSchedule('step', float(parts[1]),
                      at=tuple(float(f) for f in parts[3:]))


def _table6_builder(key):
    def build(paper, dataset):
        section = paper['table6_inception_v3_nesterov_cifar100'][key]
        rows = collections.OrderedDict()
        for row, entry in section['rows'].items():
            mn = row.upper().startswith('MN')
            fields = dict(_TABLE6_MN) if mn else dict(
                mn_layers=(), n_components=None, em_iter=None)
            reported = {'setting': key, 'steps_target': section['target'],
                        'steps': entry['steps'],
                        'max_acc': entry['max_acc'],
                        'assumed': list(_TABLE6_ASSUMED if mn
                                        else _TABLE6_ASSUMED[2:])}
            rows[row] = dict(paper=reported,
                             lr_schedule=_policy_schedule(key),
                             **fields, **_TABLE6_TRAINING)
        return rows
    return build


for _key in TABLE6_POLICIES:
    register_table('table6_' + _key,
                   'Table VI (Inception-V3, Nesterov, lr {})'.format(_key),
                   model='inception_v3', datasets=('cifar100',))(
                       _table6_builder(_key))
del _key


#: The DenseNet runs (paper section 4.4): Nesterov, batch 64, lr 0.1 divided
#: by 10 at 50% and 75% of 200 epochs. The paper's weight decay value was
#: lost from its text; 1e-4 is Huang et al.'s (DenseNet, CVPR 2017).
_DENSENET_TRAINING = dict(
    optimizer='nesterov',
    lr=0.1,
    lr_schedule=LRSchedule('step', 0.1, at=(0.5, 0.75)),
    weight_decay=1e-4,
    batchsize=64,
    epoch=200,
)
#: MN (K = 5, EM iter 2) at both transitions and the final BN.
_DENSENET_MN = dict(mn_layers=('trans1', 'trans2', 'final'), n_components=5,
                    em_iter=2)

#: Depths of the paper's DenseNets -> registered model names. Each depth is
#: a table (``densenet_l40``, ``densenet_l100``) whose rows are the paper's
#: labels ``L<depth>_BN`` and ``L<depth>_MN``.
DENSENET_MODELS = collections.OrderedDict(
    [(40, 'densenet40'), (100, 'densenet100')])


def _densenet_builder(depth):
    def build(paper, dataset):
        errors = paper['densenet_cifar100']['best_test_error_percent']
        prefix = 'L{}_'.format(depth)
        rows = collections.OrderedDict()
        for row, error in errors.items():
            if not row.startswith(prefix):
                continue
            mn = row[len(prefix):].upper() == 'MN'
            fields = dict(_DENSENET_MN) if mn else dict(
                mn_layers=(), n_components=None, em_iter=None)
            rows[row] = dict(paper={'best_test_error_percent': error,
                                    'assumed': ['weight_decay']},
                             **fields, **_DENSENET_TRAINING)
        return rows
    return build


for _depth, _model in DENSENET_MODELS.items():
    register_table('densenet_l{}'.format(_depth),
                   'DenseNet L={} k=12 (CIFAR-100)'.format(_depth),
                   model=_model, datasets=('cifar100',))(
                       _densenet_builder(_depth))
del _depth, _model
# End of the issue 6 section.


# ---------------------------------------------------------------------------
# The paper's experiments, as the comparison tools group them.


@dataclasses.dataclass(frozen=True)
class Experiment(object):

    """One experiment of the paper: a model trained one way, and its tables.

    Runs of one experiment are compared with each other and with the
    tables that report it (:mod:`mn_chainer.compare`).

    Attributes:
        name (str): ``'cifar_cnn'``, ``'inception'``, ``'nesterov'`` or
            ``'densenet'``.
        title (str): Human-readable name (``'CIFAR CNN'``).
        tables (tuple of str): The paper's table ids reporting it
            (``'table2'``, ``'table3'``); an id followed by ``_`` and more
            (``'table3_cifar_cnn_steps'``, a preset table's
            ``'table6_decay_0.1_at_0.5_0.75'``) names it too.
        models (tuple of str): Registered models trained only in this
            experiment, so that a run naming no table is still placed.
        epoch (int): The paper's training length in epochs.
        batchsize (int): The paper's mini-batch size.
        results (dict): Form (``'accuracy'``: Tables II/IV, ``'steps'``:
            Tables III/V/VI, ``'error'``: DenseNet) -> ``(key, label)``:
            the section of :func:`mn_chainer.paper.load_paper_results` and
            its caption (``'Table II'``).

    """

    name: str
    title: str
    tables: typing.Tuple[str, ...]
    models: typing.Tuple[str, ...]
    epoch: int
    batchsize: int
    results: typing.Dict[str, typing.Tuple[str, str]]


def _experiment(name, title, tables, models, training, results):
    return Experiment(name, title, tables, models, training['epoch'],
                      training['batchsize'], results)


#: The paper's experiments, by name.
EXPERIMENTS = collections.OrderedDict((e.name, e) for e in (
    _experiment('cifar_cnn', 'CIFAR CNN', ('table2', 'table3'),
                ('cifar_cnn',), _TABLE2_TRAINING,
                {'accuracy': ('table2_cifar_cnn', 'Table II'),
                 'steps': ('table3_cifar_cnn_steps', 'Table III')}),
    _experiment('inception', 'Inception-V3', ('table4', 'table5'),
                ('inception_v3',), _TABLE4_TRAINING,
                {'accuracy': ('table4_inception_v3', 'Table IV'),
                 'steps': ('table5_inception_v3_steps', 'Table V')}),
    _experiment('nesterov', 'Inception-V3, Nesterov, CIFAR-100',
                ('table6',), (), _TABLE6_TRAINING,
                {'steps': ('table6_inception_v3_nesterov_cifar100',
                           'Table VI')}),
    _experiment('densenet', 'DenseNet, CIFAR-100', ('densenet',),
                ('densenet',) + tuple(DENSENET_MODELS.values()),
                _DENSENET_TRAINING,
                {'error': ('densenet_cifar100', 'DenseNet (§4.4)')}),
))


def experiment_of_table(table):
    """Returns the name of the experiment a paper table id reports.

    Args:
        table (str): ``'table2'``, ``'Table5'``, ``'table3_cifar_cnn_steps'``,
            a preset table id (``'densenet_l40'``), ...

    Raises:
        ValueError: For a table of no experiment (the message lists the
            valid ids).

    """
    key = str(table).lower().replace('-', '_')
    for experiment in EXPERIMENTS.values():
        for table_id in experiment.tables:
            if key == table_id or key.startswith(table_id + '_'):
                return experiment.name
    raise ValueError('unknown paper table {!r}; valid tables: {}'.format(
        table, ', '.join(t for e in EXPERIMENTS.values() for t in e.tables)))


def experiment_of_model(model):
    """Returns the experiment a model is trained in, or None if several."""
    for experiment in EXPERIMENTS.values():
        if model in experiment.models:
            return experiment.name
    return None
