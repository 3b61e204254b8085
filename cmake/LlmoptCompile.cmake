# llmopt_compile(): run llmopt as a build step.
#
#   llmopt_compile(<target>
#     INPUT model.onnx                 # relative paths are from the calling CMakeLists.txt
#     PASSES "quant-int4<block=128>"   # the -passes= pipeline (optional: none just re-exports)
#     OUTPUT model.q4.onnx             # relative paths are in the build directory
#     [EMIT cpp]                       # generated C++ instead of ONNX (needs llmopt --emit=cpp)
#     [TARGET_RUNTIME ort|onnx]        # --target= (default ort)
#     [CALIB file] [TOKENIZER file]    # calibration data for GPTQ, AWQ, Wanda, SparseGPT, ...
#     [ARGS ...]                       # any other llmopt flags
#     [DEPENDS ...])                   # extra files whose change reruns llmopt
#
# Adds a custom target <target> (built by `all`) that produces OUTPUT; OUTPUT is rebuilt
# when INPUT, the calibration files or the llmopt executable change. llmopt writes
# through a temporary file, so a failed build step never leaves a stale or partial model.
#
# LLMOPT_EXECUTABLE names the llmopt to run: llmoptConfig.cmake sets it to the installed
# binary; an in-tree build sets it to the llmopt target.

function(llmopt_compile target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "INPUT;OUTPUT;PASSES;EMIT;TARGET_RUNTIME;CALIB;TOKENIZER"
                        "ARGS;DEPENDS")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "llmopt_compile(${target}): unknown arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  foreach(required INPUT OUTPUT)
    if(NOT arg_${required})
      message(FATAL_ERROR "llmopt_compile(${target}): ${required} is required")
    endif()
  endforeach()
  if(NOT LLMOPT_EXECUTABLE)
    message(FATAL_ERROR "llmopt_compile(${target}): LLMOPT_EXECUTABLE is not set; use "
                        "find_package(llmopt) or include LlmoptCompile.cmake from llmopt's tree")
  endif()

  get_filename_component(input "${arg_INPUT}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  get_filename_component(output "${arg_OUTPUT}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
  set(cmd "${LLMOPT_EXECUTABLE}" "${input}" --quiet)
  if(arg_PASSES)
    list(APPEND cmd "-passes=${arg_PASSES}")
  endif()
  if(arg_TARGET_RUNTIME)
    list(APPEND cmd "--target=${arg_TARGET_RUNTIME}")
  endif()
  set(deps "${input}")
  foreach(data CALIB TOKENIZER)
    if(arg_${data})
      get_filename_component(path "${arg_${data}}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
      string(TOLOWER "${data}" flag)
      list(APPEND cmd "--${flag}" "${path}")
      list(APPEND deps "${path}")
    endif()
  endforeach()
  if(arg_EMIT)
    if(NOT arg_EMIT STREQUAL "cpp")
      message(FATAL_ERROR "llmopt_compile(${target}): EMIT ${arg_EMIT}: only 'cpp' is accepted")
    endif()
    _llmopt_has_emit_cpp(has_emit)
    if(NOT has_emit)
      message(FATAL_ERROR
              "llmopt_compile(${target}): EMIT cpp needs an llmopt with --emit=cpp (C++ code "
              "generation); ${LLMOPT_EXECUTABLE} does not offer it yet. Drop EMIT to write ONNX.")
    endif()
    list(APPEND cmd --emit=cpp)
  endif()
  list(APPEND cmd ${arg_ARGS} -o "${output}")

  get_filename_component(outdir "${output}" DIRECTORY)
  add_custom_command(
    OUTPUT "${output}"
    COMMAND "${CMAKE_COMMAND}" -E make_directory "${outdir}"
    COMMAND ${cmd}
    DEPENDS ${deps} ${arg_DEPENDS} ${_LLMOPT_EXECUTABLE_DEPENDS}
    COMMENT "llmopt: ${arg_INPUT} -> ${arg_OUTPUT}"
    VERBATIM)
  add_custom_target(${target} ALL DEPENDS "${output}")
  set_target_properties(${target} PROPERTIES LLMOPT_OUTPUT "${output}")
endfunction()

# Whether the llmopt in use accepts --emit=cpp: asks an installed binary's --help once;
# an in-tree llmopt (not built yet at configure time) answers LLMOPT_HAS_EMIT_CPP.
function(_llmopt_has_emit_cpp out)
  if(DEFINED LLMOPT_HAS_EMIT_CPP)
    set(${out} ${LLMOPT_HAS_EMIT_CPP} PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND "${LLMOPT_EXECUTABLE}" --help OUTPUT_VARIABLE help RESULT_VARIABLE rc
                  ERROR_QUIET)
  if(rc EQUAL 0 AND help MATCHES "--emit")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()
