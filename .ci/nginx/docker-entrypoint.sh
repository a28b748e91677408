#!/bin/sh
# What the official image's entrypoint does for a compose file that mounts templates: when the
# command is nginx, render each /etc/nginx/templates/**/*.template into /etc/nginx/conf.d/ with
# envsubst, replacing only the environment variables whose names match NGINX_ENVSUBST_FILTER
# (all of them when it is unset), so nginx's own $variables stay; then exec the command.
set -eu

render_templates() {
  template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
  suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
  output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
  [ -d "$template_dir" ] || return 0
  if [ ! -w "$output_dir" ]; then
    echo "$0: ERROR: $template_dir exists, but $output_dir is not writable"
    return 0
  fi
  names=$(awk -v filter="${NGINX_ENVSUBST_FILTER:-}" \
    'END { for (name in ENVIRON) if (name ~ filter) printf "${%s} ", name }' </dev/null)
  find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative=${template#"$template_dir"/}
    output=$output_dir/${relative%"$suffix"}
    mkdir -p "$(dirname "$output")"
    echo "$0: running envsubst on $template to $output"
    envsubst "$names" <"$template" >"$output"
  done
}

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
  render_templates
fi
exec "$@"
