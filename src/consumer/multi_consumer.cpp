// MultiConsumer: fair polling over single-topic consumers of one name,
// sleeping on the bus's bell; changes of the topic set, all or nothing.
#include <algorithm>

#include "common/clock.hpp"
#include "common/names.hpp"
#include "consumer/multi_consumer_impl.hpp"
#include "ring/wait.hpp"

namespace rill {

MultiConsumer::Impl::Member* MultiConsumer::Impl::find(std::string_view topic) noexcept {
  auto it = std::lower_bound(members.begin(), members.end(), topic,
                             [](const Member& m, std::string_view t) { return m.topic < t; });
  return it != members.end() && it->topic == topic ? &*it : nullptr;
}

Result<MultiConsumer::Impl::Member> MultiConsumer::Impl::open_member(std::string_view topic,
                                                                  const std::vector<std::uint32_t>& partitions) {
  Result<Topic> t = open_topic(topic);
  if (!t.ok()) return t.status();
  if (options.mode == ConsumerMode::kStandby) {
    return Status::InvalidArgument("multi-consumer '" + options.name +
                                   "': kStandby is for single-topic consumers; use kExclusive, kShared or kKeyShared");
  }
  ConsumerOptions co{.name = options.name,
                     .position = options.position,
                     .partitions = partitions,
                     .mode = options.mode,
                     .individual_acks = options.individual_acks,
                     .max_redeliveries = options.max_redeliveries,
                     .dead_letter_topic = options.dead_letter_topic,
                     .max_batch = options.max_batch};
  Result<Consumer> c = t->consumer(std::move(co));
  if (!c.ok()) return c.status();
  const std::string_view interned = *names.emplace(topic).first;
  return Member{interned, partitions, std::move(*c)};
}

Status MultiConsumer::Impl::apply(const Target& target) {
  std::lock_guard<std::mutex> lock(mu);
  if (closed.load(std::memory_order_acquire)) return Status::Closed("multi-consumer '" + options.name + "' is closed");
  // Members kept as they are, and the ones to (re)open.
  std::vector<Member> kept, opened;
  std::vector<Member*> changed;  // kept topics whose partitions change: reopened below
  std::vector<std::pair<std::string_view, const std::vector<std::uint32_t>*>> to_open;
  for (const auto& [topic, parts] : target) {
    Member* m = find(topic);
    if (m && m->partitions == parts && !m->dead) continue;  // a dead one (deleted topic) is opened again
    if (m) changed.push_back(m);
    to_open.emplace_back(topic, &parts);
  }
  // Close the changed ones first (their name is live on those partitions),
  // then open everything new; on a failure undo, reopening the changed ones.
  auto undo = [&](Status why) {
    opened.clear();  // closes them
    for (Member* m : changed) {
      Result<Member> again = open_member(m->topic, m->partitions);
      if (again.ok()) *m = std::move(*again);
    }
    return why;
  };
  for (Member* m : changed) m->consumer.close();
  for (const auto& [topic, parts] : to_open) {
    Result<Member> m = open_member(topic, *parts);
    if (!m.ok()) return undo(m.status());
    opened.push_back(std::move(*m));
  }
  // Commit: keep what stays, add what opened, drop (close) the rest.
  std::vector<Member> next_members;
  for (Member& m : members) {
    auto t = target.find(m.topic);
    if (t != target.end() && t->second == m.partitions && !m.dead) next_members.push_back(std::move(m));
  }
  for (Member& m : opened) next_members.push_back(std::move(m));
  std::sort(next_members.begin(), next_members.end(),
            [](const Member& a, const Member& b) { return a.topic < b.topic; });
  members.swap(next_members);  // next_members now holds the dropped ones: closed as it dies
  next = 0;
  return Status::Ok();
}

// ------------------------------------------------------------ the handle

MultiConsumer::MultiConsumer() noexcept = default;
MultiConsumer::MultiConsumer(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
MultiConsumer::MultiConsumer(MultiConsumer&&) noexcept = default;
MultiConsumer& MultiConsumer::operator=(MultiConsumer&& o) noexcept {
  if (this != &o) {
    close();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
MultiConsumer::~MultiConsumer() { close(); }

Result<TopicBatch> MultiConsumer::poll_batch(std::size_t max, Timeout timeout) {
  assert(impl_ && "poll_batch() needs a valid MultiConsumer");
  Impl& s = *impl_;
  detail::LazyDeadline deadline(timeout);
  for (;;) {
    if (s.closed.load(std::memory_order_acquire)) return Status::Closed("multi-consumer '" + s.options.name + "' is closed");
    const std::size_t k = s.members.size();
    bool any_alive = false;
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t i = (s.next + j) % k;
      Impl::Member& m = s.members[i];
      if (m.dead) continue;
      Result<std::span<const Event>> r = m.consumer.poll_batch(max, Timeout::zero());
      if (r.ok()) {
        s.next = (i + 1) % k;
        return TopicBatch{m.topic, *r};
      }
      if (r.status().is_closed()) {
        if (s.closed.load(std::memory_order_acquire)) return r.status();
        m.dead = true;  // its topic was closed or deleted
        continue;
      }
      if (!r.status().is_timed_out()) return r.status();
      any_alive = true;
    }
    if (k > 0 && !any_alive) return Status::Closed("every topic of multi-consumer '" + s.options.name + "' is closed");
    if (timeout == Timeout::zero()) return Status::TimedOut("no event within the timeout");
    const bool woke = detail::wait_until(WaitStrategy::kBlocking, *s.bell, deadline.get(), [&] {
      if (s.closed.load(std::memory_order_acquire)) return true;
      for (Impl::Member& m : s.members) {
        if (!m.dead && m.consumer.impl_->ready_to_poll()) return true;
      }
      return false;
    });
    if (!woke) return Status::TimedOut("no event within the timeout");
  }
}

Result<TopicEvent> MultiConsumer::poll(Timeout timeout) {
  Result<TopicBatch> b = poll_batch(1, timeout);
  if (!b.ok()) return b.status();
  return TopicEvent{b->topic, b->events[0]};
}

Status MultiConsumer::ack(std::string_view topic, const Event& e) {
  assert(impl_ && "ack() needs a valid MultiConsumer");
  Impl::Member* m = impl_->find(topic);
  if (!m) return impl_->not_read("ack", topic);
  return m->consumer.ack(e);
}

Status MultiConsumer::nack(std::string_view topic, const Event& e, Timeout delay, std::string_view reason) {
  assert(impl_ && "nack() needs a valid MultiConsumer");
  Impl::Member* m = impl_->find(topic);
  if (!m) return impl_->not_read("nack", topic);
  return m->consumer.nack(e, delay, reason);
}

Status MultiConsumer::nack(const TopicEvent& e, Timeout delay, std::string_view reason) {
  return nack(e.topic, e.event, delay, reason);
}

Status MultiConsumer::Impl::not_read(const char* call, std::string_view topic) const {
  return Status::InvalidArgument(std::string(call) + "() of an event of topic '" + std::string(topic) +
                                 "', which multi-consumer '" + options.name + "' does not read (now)");
}

Status MultiConsumer::ack(const TopicEvent& e) { return ack(e.topic, e.event); }

Status MultiConsumer::update_topics(std::span<const std::string> topics) {
  assert(impl_ && "update_topics() needs a valid MultiConsumer");
  Impl::Target target;
  for (const std::string& t : topics) {
    if (Status s = detail::validate_name("topic name", t); !s.ok()) return s;
    if (!target.emplace(t, std::vector<std::uint32_t>{}).second) {
      return Status::InvalidArgument("topic '" + t + "' is listed twice");
    }
  }
  return impl_->apply(target);
}

Status MultiConsumer::assign(std::span<const TopicPartition> pairs) {
  assert(impl_ && "assign() needs a valid MultiConsumer");
  Impl::Target target;
  for (const TopicPartition& tp : pairs) {
    if (Status s = detail::validate_name("topic name", tp.topic); !s.ok()) return s;
    std::vector<std::uint32_t>& parts = target[tp.topic];
    if (std::find(parts.begin(), parts.end(), tp.partition) != parts.end()) {
      return Status::InvalidArgument("partition " + std::to_string(tp.partition) + " of topic '" + tp.topic +
                                     "' is listed twice");
    }
    parts.push_back(tp.partition);
  }
  for (auto& [t, parts] : target) std::sort(parts.begin(), parts.end());
  return impl_->apply(target);
}

std::vector<std::string> MultiConsumer::topics() const {
  assert(impl_ && "topics() needs a valid MultiConsumer");
  std::vector<std::string> out;
  for (const Impl::Member& m : impl_->members) out.emplace_back(m.topic);
  return out;
}

std::vector<TopicPartition> MultiConsumer::assignment() const {
  assert(impl_ && "assignment() needs a valid MultiConsumer");
  std::vector<TopicPartition> out;
  for (const Impl::Member& m : impl_->members) {
    if (!m.partitions.empty()) {
      for (std::uint32_t p : m.partitions) out.push_back({std::string(m.topic), p});
      continue;
    }
    const std::uint32_t n = m.consumer.impl_->topic().partitions();
    for (std::uint32_t p = 0; p < n; ++p) out.push_back({std::string(m.topic), p});
  }
  return out;
}

void MultiConsumer::close() noexcept {
  if (!impl_) return;
  Impl& s = *impl_;
  if (s.closed.exchange(true, std::memory_order_acq_rel)) return;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (Impl::Member& m : s.members) m.consumer.close();
  }
  s.bell->wake_all();
}

const std::string& MultiConsumer::name() const noexcept {
  assert(impl_ && "name() needs a valid MultiConsumer");
  return impl_->options.name;
}

}  // namespace rill
