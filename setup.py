"""Packaging for gochat: a distributed instant-messaging server on Twisted."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="gochat",
    version="0.1.0",
    description="Distributed instant-messaging server on Twisted and Autobahn",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["gochat", "gochat.*"]), "twisted.plugins"],
    package_data={
        "twisted": ["plugins/gochat_plugins.py"],
        "gochat": ["py.typed"],
        "gochat.gateway": ["static/*"],  # the web client the gateway serves at /
        "gochat.logic": ["amqp0-9-1.stripped.extended.xml"],
        "gochat.v1": ["*.pyi"],
    },
    # Versions tested together; grpcio must match the grpcio-tools that generated gochat/v1.
    install_requires=[
        "twisted[tls]>=26.10,<27",
        "autobahn>=26.10,<27",
        "txamqp==0.8.2",
        "txredisapi>=1.6,<2",
        "grpcio==1.85.1",
        "protobuf>=7.35,<8",
        "pymysql>=1.2,<2",
    ],
    extras_require={
        "test": [
            "pytest>=9,<10",
            "pytest-twisted>=1.14,<2",
            "grpcio-tools==1.85.1",
            "websockets>=17,<18",  # bench/chaos.py's clients, independent of the server's Autobahn
            "playwright>=1.65,<2",  # tests/integration/test_browser.py drives Debian's /usr/bin/chromium
        ],
        "dev": [
            "pytest>=9,<10",
            "pytest-twisted>=1.14,<2",
            "grpcio-tools==1.85.1",
            "websockets>=17,<18",  # bench/chaos.py's clients, independent of the server's Autobahn
            "playwright>=1.65,<2",  # tests/integration/test_browser.py drives Debian's /usr/bin/chromium
            "mypy>=2.4,<3",
            "mypy-zope>=1.0.17,<2",
            "ruff>=0.17,<0.18",
            "types-protobuf>=7.35",
        ],
        # python -m bench: its clients, its plot (PNG) and its --profile (tested with 17.4, 3.11.2 and 0.4.3).
        "bench": [
            "websockets>=17,<18",
            "matplotlib>=3.11,<4",
            "py-spy>=0.4,<0.5",
        ],
    },
    zip_safe=False,
)
