# The UCX the build is against, for the test scripts that run UCX programs
# over orc (sourced, bash, by orc_test_lib.sh and perftest_lib.sh; $lib is
# the built module). Sets:
#   ucx_info, perftest   that UCX's tools (ORC_UCX_INFO / ORC_UCX_PERFTEST
#                        from the test harness; else PATH's; empty if none)
#   orc_env              VAR=value words that put orc into a UCX program,
#                        for env(1): where the harness set UCX_PLUGIN_PATH (a
#                        UCX that reads it, 1.22) UCX's own loader finds the
#                        module; otherwise (1.13 loads only its own modules)
#                        it is preloaded. Only UCX programs get them, not
#                        ip, ss or timeout.
# Not UCX_*-named: UCX warns about variables of its prefix it does not know.

ucx_info=${ORC_UCX_INFO:-$(command -v ucx_info || true)}
perftest=${ORC_UCX_PERFTEST:-$(command -v ucx_perftest || true)}
[ -x "$ucx_info" ] || ucx_info=
[ -x "$perftest" ] || perftest=
if [ -n "${UCX_PLUGIN_PATH:-}" ]; then
    orc_env=("UCX_PLUGIN_PATH=$UCX_PLUGIN_PATH")
else
    orc_env=("LD_PRELOAD=$lib${LD_PRELOAD:+:$LD_PRELOAD}")
fi

# orc_ucp_tag_lanes: a sed -n script printing the tag lanes ("orc/soft_lo:1
# ...") of each ep configuration UCP logs at UCX_LOG_LEVEL=info, whose line
# changed: "ep_cfg[0]: tag(orc/soft_lo:1) ..." (1.13), "ucp_context_0
# intra-node cfg#0 tag(orc/soft_lo:1) ..." (1.22)
orc_ucp_tag_lanes='s/.*\(ep_cfg\[[0-9]*\]:\|cfg#[0-9]*\) tag(\([^)]*\)).*/\2/p'
