"""mn-chainer: Mixture Normalization (Kalayeh & Shah) for Chainer and CuPy."""
import setuptools


# The fused CPU kernels of the mixture fit and of the transform
# (mn_chainer/cpu_kernels.py loads them with ctypes).  Optional: without a C
# compiler the package installs, and mn_chainer.gmm and the transform run
# their NumPy paths.
cpu_kernels = setuptools.Extension(
    'mn_chainer._cpu_kernels',
    sources=['mn_chainer/_cpu_kernels.c'],
    depends=['mn_chainer/_cpu_kernels_impl.h',
             'mn_chainer/_transform_kernels_impl.h',
             'mn_chainer/_thread_team.h'],
    extra_compile_args=['-O3', '-std=c99', '-fopenmp-simd',
                        '-ffp-contract=fast', '-pthread'],
    extra_link_args=['-pthread'],
    optional=True,
)


setuptools.setup(
    name='mn-chainer',
    version='0.1.0',
    description='Mixture Normalization (Kalayeh & Shah, TPAMI 2019) for '
                'Chainer/CuPy',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['mn_chainer', 'mn_chainer.*',
                                               'models', 'models.*']),
    py_modules=['train_cifar', 'train_dcgan'],
    ext_modules=[cpu_kernels],
    package_data={'mn_chainer': ['data/*.json']},
    python_requires='>=3.10',
    install_requires=[
        'numpy<2',
        'setuptools<70',
        'chainer==7.8.1',
        'chainercv==0.13.1',
        'scipy',
        'matplotlib',
        'tqdm',
        'threadpoolctl',
    ],
    extras_require={
        # Runs the kernels on an NVIDIA GPU (CUDA 12).
        'gpu': ['cupy-cuda12x<14'],
        # What CI installs: test references and the NVRTC compile check of
        # every CUDA source (no GPU needed).
        'test': ['scikit-learn', 'pytest', 'cupy-cuda12x<14',
                 'nvidia-cuda-nvrtc-cu12'],
    },
    entry_points={
        'console_scripts': [
            'mn-compare = mn_chainer.compare:main',
            'mn-evaluate = mn_chainer.evaluate:main',
            'mn-plot = mn_chainer.plot:main',
            'mn-study = mn_chainer.study:main',
        ],
    },
)
