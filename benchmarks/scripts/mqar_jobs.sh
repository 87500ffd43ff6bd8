# Sourced by the MQAR device scripts (h100_mqar2.sh, h200_mqar_long.sh): `job_args NAME` prints the config file and
# overrides of a job name at width $WIDTH; the names are listed in h100_mqar2.sh's header (gsa-conv, abc-conv, llama,
# zoo-gsa, ...; a trailing -lrX sets the learning rate, +KEY=VALUE adds overrides).
job_args() {  # the config and overrides of a job name (a trailing -lrX sets the learning rate)
  case $1 in
    *+*) echo "$(job_args "${1%%+*}") $(echo "${1#*+}" | tr '+' ' ')" ;;
    *-lr*) echo "$(job_args "${1%-lr*}") optim.lr=${1##*-lr}" ;;
    gsa-conv) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true" ;;
    gsa-conv-bias) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true model.gate_bias=true" ;;
    gsa-conv-ub*) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true model.gate_bias=true" \
                       "model.gate_bias_range=[${1#gsa-conv-ub},${1#gsa-conv-ub}]" ;;
    gsa-conv-m*) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true model.num_slots=${1#gsa-conv-m}" ;;
    gsa-conv-tau*) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true model.gate_logit_normalizer=${1#gsa-conv-tau}" ;;
    gsa-noconv) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=false" ;;
    abc-conv) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=true model.forget_gate=\"none\"" ;;
    abc-noconv) echo "configs/mqar-gsa-d$WIDTH.toml model.use_short_conv=false model.forget_gate=\"none\"" ;;
    llama) echo "configs/mqar-llama-d$WIDTH.toml" ;;
    zoo-*) echo "configs/mqar-zoology-d128.toml model.mixer=\"${1#zoo-}\" model.hidden_size=$WIDTH" ;;
  esac
}
