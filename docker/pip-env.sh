# shellcheck shell=sh
# Sourced by the Dockerfile's RUN steps before pip runs.
#
# Build arguments that were not given arrive as empty variables; pip must not see those as
# settings (an empty PIP_INDEX_URL is not "the default index"), so empty ones are unset.
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_CERT HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    eval "value=\${$name:-}"
    [ -n "$value" ] || unset "$name"
done
unset name value
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
