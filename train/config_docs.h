// The configuration key reference (docs/config.md), generated from the key table that the
// parser uses and the mixer registry, so that the document lists exactly the keys that
// exist, with their real defaults. tests/test_config.cpp compares docs/config.md with it;
// SEQMIX_UPDATE_DOCS=1 ./build/test_config rewrites the file.
#pragma once

#include <string>

namespace seqmix {

// Markdown: every section, every key with its default (as to_yaml prints it) and one line
// on what it means; model.mixer.* per registered mixer type, data.* per data kind.
std::string config_reference_markdown();

}  // namespace seqmix
