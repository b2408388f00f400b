"""Names shared by the operator, the runner and the CLI: the API group, labels, finalizers, leases.

Everything that two processes must agree on lives here, so that a rename is one edit.
The protocol these names take part in is described in docs/protocol.md.
"""

import enum
from typing import Final

GROUP: Final = "gigafactory.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

AGENTJOB_KIND: Final = "AgentJob"
AGENTJOB_PLURAL: Final = "agentjobs"
AGENTJOB_SINGULAR: Final = "agentjob"
AGENTJOB_SHORT_NAMES: Final = ("aj",)

FACTORY_KIND: Final = "Factory"
FACTORY_PLURAL: Final = "factories"
FACTORY_SINGULAR: Final = "factory"
FACTORY_SHORT_NAMES: Final = ("fac",)

CATEGORY: Final = "gigafactory"

# Labels, on Leases: a runner watches only the binding Leases labelled with its own pod name
# (a label selector); heartbeat Leases carry the factory's name (docs/protocol.md).
LABEL_FACTORY: Final = f"{GROUP}/factory"
LABEL_POD: Final = f"{GROUP}/pod"
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_ROLE: Final = f"{GROUP}/role"

# Lease roles (the value of LABEL_ROLE on coordination.k8s.io/v1 Leases).
ROLE_HEARTBEAT: Final = "heartbeat"
ROLE_BINDING: Final = "binding"
ROLE_LEADER: Final = "leader"

# Credentials by consent (docs/security.md): a Secret a job names is used only when it carries this
# label ("true") and names, in this annotation, the hosts its credentials may be sent to.
LABEL_CREDENTIALS: Final = f"{GROUP}/credentials"
ANNOTATION_ALLOWED_HOSTS: Final = f"{GROUP}/allowed-hosts"
# On a log ConfigMap: the uid of the job whose attempt's output it keeps (with LABEL_POD, its author).
LABEL_JOB_UID: Final = f"{GROUP}/job-uid"
LOG_PREFIX: Final = "gf-log-"

FINALIZER_JOB: Final = f"{GROUP}/cleanup"
FINALIZER_FACTORY: Final = f"{GROUP}/drain"

# Annotations a runner puts on its heartbeat Lease: what the scheduler needs to know of the pod.
ANNOTATION_SLOTS: Final = f"{GROUP}/slots"
ANNOTATION_AGENTS: Final = f"{GROUP}/agents"
ANNOTATION_WARM_REPOS: Final = f"{GROUP}/warm-repos"

# A user's request to run a Failed or Cancelled job again (`gigafactory retry`, or kubectl annotate):
# any new value is one request; the operator records the value it honoured in status.retryRequest.
ANNOTATION_RETRY: Final = f"{GROUP}/retry"

# Env names a job may never set, whatever its agent profile allows (the CRD schema refuses them, the
# runner checks again, and a profile that allows one fails to load). The runner sets some itself
# (GIGAFACTORY_*, GIT_*, SSH_*, HOME); the rest change which program runs or what it loads before it
# reads its task (PATH, the dynamic loader, interpreter start-up: PYTHON*, NODE_*, PERL*, RUBY*, Java,
# shell start-up files) or where it connects and whom it trusts (proxies, CA bundles, package indexes).
RESERVED_ENV_PREFIXES: Final = (
    "GIGAFACTORY_", "GIT_", "SSH_", "LD_", "DYLD_", "GCONV_", "GLIBC_", "MALLOC_", "PYTHON", "NODE_", "NPM_CONFIG_",
    "npm_config_", "YARN_", "PERL", "RUBY", "GEM_", "BUNDLE_", "JAVA_", "_JAVA_", "JDK_", "BASH_FUNC_", "XDG_",
    "PIP_", "UV_", "CARGO_", "RUSTC", "DENO_", "BUN_", "OPENSSL_", "KUBE",
)
RESERVED_ENV_NAMES: Final = (
    "PATH", "HOME", "USER", "SHELL", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "PS4",
    "PROMPT_COMMAND", "ZDOTDIR", "EDITOR", "VISUAL", "PAGER", "BROWSER", "TMPDIR", "TERMINFO", "LOCPATH",
    "NLSPATH", "HOSTALIASES", "RES_OPTIONS", "LOCALDOMAIN", "CLASSPATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy", "GOFLAGS", "GOPROXY", "GOROOT",
    "GOPATH", "GOTOOLCHAIN", "GOENV", "GOINSECURE", "GONOSUMDB", "GOPRIVATE", "GONOPROXY",
)


class ConditionType(str, enum.Enum):
    """Condition types of AgentJob and Factory status."""

    SCHEDULED = "Scheduled"
    CLAIMED = "Claimed"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    READY = "Ready"
    DRAINING = "Draining"
    TEMPLATE_ACCEPTED = "TemplateAccepted"  # a scaled Factory's runner template, as the operator forces it
