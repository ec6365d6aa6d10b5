// NeuronScope SDK — versions.
#pragma once

/// Bumped whenever a type that crosses the plugin boundary changes layout or meaning.
/// The host refuses plugins built with another value.
#ifndef NSCOPE_SDK_ABI_VERSION
#define NSCOPE_SDK_ABI_VERSION 8
#endif

#define NSCOPE_VERSION_MAJOR 0
#define NSCOPE_VERSION_MINOR 1
#define NSCOPE_VERSION_PATCH 0
#define NSCOPE_VERSION_STRING "0.1.0"
