#!/bin/sh
# Create Vigil's topics on a Kafka-protocol cluster (Apache Kafka, Redpanda, or Vigil's own
# broker), with their partitions, replication factor and configs. Run it once before the
# first start of the bridge and the processors: they create what is missing themselves,
# but with the broker's default replication factor (the bridge: 1), not 3.
#
#   deploy/kafka/create-topics.sh --bootstrap kafka-1:9092,kafka-2:9092,kafka-3:9092
#   deploy/kafka/create-topics.sh --tool kafka-topics --command-config client.properties ...
#   deploy/kafka/create-topics.sh --tool rpk ...          (rpk's own profile / -X settings)
#   deploy/kafka/create-topics.sh --dry-run ...           (print the commands only)
#
# Options (and their environment variables):
#   --bootstrap HOST:PORT[,...]   VIGIL_BOOTSTRAP, default 127.0.0.1:9092
#   --partitions N                VIGIL_PARTITIONS, default 12: telemetry, alerts,
#                                 device-state and the processors' checkpoints (the
#                                 processors need as many checkpoint partitions as
#                                 telemetry has; at most N processors share the work)
#   --replication-factor N        VIGIL_REPLICATION_FACTOR, default 3
#                                 (min.insync.replicas is 2, or 1 when the factor is 1)
#   --tool vigil|kafka-topics|rpk VIGIL_TOPIC_TOOL, default vigil (`vigil topics create`,
#                                 plaintext only); kafka-topics (Apache Kafka's
#                                 kafka-topics.sh, KAFKA_TOPICS to name it) and rpk
#                                 (Redpanda) also reach TLS/SASL clusters
#   --command-config FILE         client properties for kafka-topics (security settings)
#   --dry-run                     print the commands instead of running them
# Existing topics are left alone (their partitions and configs are not changed).
set -eu

BOOTSTRAP=${VIGIL_BOOTSTRAP:-127.0.0.1:9092}
PARTITIONS=${VIGIL_PARTITIONS:-12}
RF=${VIGIL_REPLICATION_FACTOR:-3}
TOOL=${VIGIL_TOPIC_TOOL:-vigil}
VIGIL=${VIGIL:-vigil}
KAFKA_TOPICS=${KAFKA_TOPICS:-kafka-topics.sh}
COMMAND_CONFIG=
DRY_RUN=0

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "create-topics.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --bootstrap) BOOTSTRAP=${2:?}; shift 2 ;;
        --partitions) PARTITIONS=${2:?}; shift 2 ;;
        --replication-factor) RF=${2:?}; shift 2 ;;
        --tool) TOOL=${2:?}; shift 2 ;;
        --command-config) COMMAND_CONFIG=${2:?}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "create-topics.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
done
case $PARTITIONS in ''|*[!0-9]*|0) die "--partitions must be a positive number, got '$PARTITIONS'" ;; esac
case $RF in ''|*[!0-9]*|0) die "--replication-factor must be a positive number, got '$RF'" ;; esac
case $TOOL in vigil|kafka-topics|rpk) ;; *) die "--tool must be vigil, kafka-topics or rpk, got '$TOOL'" ;; esac
if [ -n "$COMMAND_CONFIG" ] && [ "$TOOL" != kafka-topics ]; then
    die "--command-config is for --tool kafka-topics (rpk: use its profile or -X settings)"
fi
MIN_ISR=2
[ "$RF" -ge 2 ] || MIN_ISR=1

WEEK=604800000
MONTH=2592000000
HOUR=3600000
# name | partitions | configs (space-separated KEY=VALUE)
TOPICS="
telemetry|$PARTITIONS|retention.ms=$WEEK min.insync.replicas=$MIN_ISR
telemetry.rejected|3|retention.ms=$MONTH min.insync.replicas=$MIN_ISR
telemetry.late|3|retention.ms=$WEEK min.insync.replicas=$MIN_ISR
alerts|$PARTITIONS|retention.ms=$MONTH min.insync.replicas=$MIN_ISR
device-state|$PARTITIONS|cleanup.policy=compact segment.ms=$HOUR min.insync.replicas=$MIN_ISR
device-status|$PARTITIONS|cleanup.policy=compact segment.ms=$HOUR min.insync.replicas=$MIN_ISR
processors.checkpoints|$PARTITIONS|cleanup.policy=compact segment.ms=$HOUR max.message.bytes=67108864 min.insync.replicas=$MIN_ISR
"

run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "$*"
        return 0
    fi
    echo "+ $*" >&2
    "$@"
}

create() {
    name=$1 parts=$2 configs=$3
    set --
    case $TOOL in
        vigil)
            set -- "$VIGIL" topics create "$name" --bootstrap-server "$BOOTSTRAP" \
                --partitions "$parts" --replication-factor "$RF" --if-not-exists
            for c in $configs; do set -- "$@" --config "$c"; done ;;
        kafka-topics)
            set -- "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
                --topic "$name" --partitions "$parts" --replication-factor "$RF"
            [ -z "$COMMAND_CONFIG" ] || set -- "$@" --command-config "$COMMAND_CONFIG"
            for c in $configs; do set -- "$@" --config "$c"; done ;;
        rpk)
            set -- rpk topic create "$name" -X "brokers=$BOOTSTRAP" -p "$parts" -r "$RF"
            for c in $configs; do
                case $c in
                    # Redpanda's Raft: acks=all waits for a majority of the replicas anyway
                    min.insync.replicas=*) ;;
                    *) set -- "$@" -c "$c" ;;
                esac
            done ;;
    esac
    if [ "$TOOL" = rpk ] && [ "$DRY_RUN" = 0 ]; then
        # rpk has no --if-not-exists: an existing topic is reported, not an error here
        echo "+ $*" >&2
        out=$("$@" 2>&1) && { echo "$out"; return 0; }
        case $out in *TOPIC_ALREADY_EXISTS*) echo "$name exists, left as it is"; return 0 ;; esac
        echo "$out" >&2
        return 1
    fi
    run "$@"
}

echo "$TOPICS" | while IFS='|' read -r name parts configs; do
    [ -n "$name" ] || continue
    create "$name" "$parts" "$configs"
done
