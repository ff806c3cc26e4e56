// rill/rill.hpp — the whole public API of rill.
#pragma once

#include "rill/buffer.hpp"
#include "rill/bus.hpp"
#include "rill/consumer.hpp"
#include "rill/data_view.hpp"
#include "rill/event.hpp"
#include "rill/join.hpp"
#include "rill/multi_consumer.hpp"
#include "rill/options.hpp"
#include "rill/pipeline.hpp"
#include "rill/producer.hpp"
#include "rill/pull.hpp"
#include "rill/push.hpp"
#include "rill/status.hpp"
#include "rill/thread_pool.hpp"
#include "rill/topic.hpp"
#include "rill/write_batch.hpp"
