// Selective consumption, the pull model's scenario: a detector publishes
// W x H monochrome images, each with its energy in the metadata. The
// analysis only wants images whose energy exceeds 20, and of those only a
// w x h region of interest. Its selector reads the metadata first and picks
// the rectangle with one strided view; its allocator puts the rows into
// memory the analysis owns. Everything else is never copied.
//
//   selective_consume [--images N]
#include <rill/json.hpp>
#include <rill/rill.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t W = 256, H = 128;      // the detector's image
constexpr std::size_t x = 100, y = 40;       // the region of interest's corner
constexpr std::size_t w = 32, h = 16;        // and its size

std::uint8_t pixel(int image, std::size_t col, std::size_t row) {
  return std::uint8_t((image * 31 + int(col) * 7 + int(row) * 13) & 0xff);
}

}  // namespace

int main(int argc, char** argv) {
  int images = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--images") == 0) images = std::atoi(argv[i + 1]);
  }

  rill::Bus bus;
  auto topic = bus.create_topic("detector", {.capacity = 256});
  if (!topic.ok()) return std::fprintf(stderr, "%s\n", topic.status().to_string().c_str()), 1;

  // The analysis' memory: one w x h tile per selected image.
  std::vector<std::vector<std::uint8_t>> tiles;
  tiles.reserve(std::size_t(images));

  rill::ConsumerOptions options{.name = "analysis"};
  options.selector = [](const rill::EventHeader& header, const rill::DataDescriptor& all) -> rill::DataDescriptor {
    auto md = rill::parse_metadata(header.metadata);
    if (!md.ok() || md->value("energy", 0.0) <= 20.0) return {};  // decline: no byte is copied
    // The rows holding the rectangle, then w bytes of each, W - w apart.
    auto rows = all.sub_view(y * W + x, W * h);
    if (!rows.ok()) return {};
    auto rect = rows->strided_view(0, h, w, W - w);
    return rect.ok() ? *rect : rill::DataDescriptor{};
  };
  options.allocator = [&tiles](const rill::EventHeader&, const rill::DataDescriptor& selected) {
    tiles.emplace_back(selected.size());
    return rill::DataView(tiles.back().data(), tiles.back().size());
  };
  auto consumer = topic->consumer(options);
  if (!consumer.ok()) return std::fprintf(stderr, "%s\n", consumer.status().to_string().c_str()), 1;

  std::thread detector([&] {
    auto producer = topic->producer();
    std::string image(W * H, '\0');
    for (int i = 0; i < images; ++i) {
      for (std::size_t row = 0; row < H; ++row) {
        for (std::size_t col = 0; col < W; ++col) image[row * W + col] = char(pixel(i, col, row));
      }
      const double energy = double((i * 37) % 50);  // 0 .. 49
      const std::string md = "{\"energy\":" + std::to_string(energy) + "}";
      if (!producer->publish(rill::Message{.metadata = md, .data = image}).ok()) return;
    }
  });

  int selected = 0, declined = 0, wrong = 0;
  std::size_t copied = 0;
  auto handled = consumer->process(
      [&](const rill::PulledEvent& e) {
        if (e.data().empty()) {
          ++declined;
        } else {
          ++selected;
          copied += e.data().size();
          // Check the tile against the image the detector made.
          const auto* tile = static_cast<const std::uint8_t*>(e.data().segments()[0].ptr);
          const int i = int(e.id().offset);
          for (std::size_t r = 0; r < h; ++r) {
            for (std::size_t c = 0; c < w; ++c) wrong += tile[r * w + c] != pixel(i, x + c, y + r);
          }
        }
        (void)e.acknowledge();
        return selected + declined < images;
      },
      std::chrono::seconds(5));
  detector.join();
  if (!handled.ok()) return std::fprintf(stderr, "%s\n", handled.status().to_string().c_str()), 1;

  std::printf("images: %d, selected (energy > 20): %d, declined: %d\n", images, selected, declined);
  std::printf("bytes copied: %zu of %zu published (%.1f%%), tiles of %zux%zu at (%zu,%zu), wrong pixels: %d\n",
              copied, std::size_t(images) * W * H, 100.0 * double(copied) / double(std::size_t(images) * W * H), w,
              h, x, y, wrong);
  return wrong == 0 && selected + declined == images ? 0 : 1;
}
