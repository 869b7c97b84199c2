# compose/gramine-sgx.yaml points the worker's build here. The SGX image is made by
# gsc/build-gsc-image.sh (it must be signed, and its MRENCLAVE published), never by
# docker-compose; this build stops with the message below instead.
FROM scratch
RUN ["The gsc- image is missing: build it with gsc/build-gsc-image.sh (see docs/deployment.md)"]
