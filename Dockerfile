# bids_mdpp as a container: MS lesion segmentation from any subset of MRI contrasts (a BIDS App).
#
#   docker build -t bids_mdpp:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v "$PWD/bids:/data:ro" -v "$PWD/out:/out" \
#       bids_mdpp:0.1.0 /data /out participant
#
# GPU image: PyPI/PyTorch CUDA wheels carry their own CUDA libraries, so the same base works and
# the host only needs the NVIDIA driver (docker run --gpus all …):
#   docker build -t bids_mdpp:0.1.0-cuda --build-arg VERSION=0.1.0 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# BASE_IMAGE may instead name a CUDA runtime image with Python >= 3.11 (e.g. an Ubuntu 24.04 one);
# Python is then installed from the distribution.  See docs/containers.md.

ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libjemalloc2: the allocator that makes PyTorch ~3x faster on the CPU (see bids_mdpp/allocator.py).
# The symlink gives it one path on every architecture.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3 python3-venv; \
    fi \
 && ln -s "$(dpkg -L libjemalloc2 | grep '/libjemalloc\.so\.2$' | head -n 1)" /usr/local/lib/libjemalloc.so.2 \
 && rm -rf /var/lib/apt/lists/*

# The one install recipe (also used by the README and CI): torch, then this package, into /opt/venv.
# PIP_FIND_LINKS: a folder of wheels mounted into the build (podman build -v DIR:/wheels:ro
# --build-arg PIP_FIND_LINKS=/wheels), e.g. a CPU build of torch; empty: the package index only.
ARG TORCH_INDEX_URL=""
ARG PIP_FIND_LINKS=""
COPY . /opt/bids_mdpp
WORKDIR /opt/bids_mdpp
# Permissions are set in the same step: a later chmod would copy every file into a new layer (+1.9 GB).
RUN BIDS_MDPP_VENV=/opt/venv PIP_NO_CACHE_DIR=1 bash tools/install.sh \
 && /opt/venv/bin/python -m compileall -q bids_mdpp \
 && chmod -R a+rX /opt/venv /opt/bids_mdpp

ENV PATH=/opt/venv/bin:$PATH

# Bake what a run needs so that nothing is downloaded at run time: the default model (inside the
# package, checked to load) and TemplateFlow templates.  Set TEMPLATEFLOW_TEMPLATES="" to build
# without network access to TemplateFlow; the app then uses nilearn's bundled MNI152 template.
ARG TEMPLATEFLOW_TEMPLATES="MNI152NLin2009cAsym"
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -c "from bids_mdpp.model import default_model_dir, load_model; load_model(default_model_dir())" \
 && python -c "import sys, templateflow.api as tf; \
missing = [f'{t} desc={desc} {suffix}' for t in sys.argv[1:] for desc, suffix in ((None, 'T1w'), ('brain', 'mask')) \
           if not tf.get(t, resolution=1, desc=desc, suffix=suffix, extension='.nii.gz')]; \
sys.exit(f'TemplateFlow files not found: {missing}' if missing else 0)" ${TEMPLATEFLOW_TEMPLATES} \
 && python -c "from nilearn.datasets import load_mni152_template; load_mni152_template(resolution=1)" \
 && chmod -R a+rX /opt/templateflow

# Run as an unprivileged user; every place a library writes to is under /tmp, so the image also
# runs with `docker run --read-only --tmpfs /tmp` and under any --user uid.
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp/home --shell /bin/bash bidsmdpp
ENV HOME=/tmp/home \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    TORCH_HOME=/tmp/.cache/torch \
    NIPYPE_CONFIG_DIR=/tmp/home/.nipype \
    NIPYPE_NO_ET=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8

# The allocator, set before the process starts (bids_mdpp/allocator.py then leaves it alone).
# OMP_NUM_THREADS is deliberately unset: the app sets threads from --omp-nthreads.
ENV LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=oversize_threshold:0,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1 \
    BIDS_MDPP_ALLOCATOR=jemalloc

ARG VERSION=dev
ARG SOURCE_URL=""
ARG REVISION=""
ENV BIDS_MDPP_CONTAINER=docker:bids_mdpp:${VERSION}
LABEL org.opencontainers.image.title="bids_mdpp" \
      org.opencontainers.image.description="BIDS App: multiple-sclerosis lesion segmentation from any subset of T1w, T2w, FLAIR, PDw and contrast-enhanced T1w (ModDrop++)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The user created above, by number so that runtimes can check it is not root.
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids_mdpp"]
