# ctest cmake/example-project: install llmopt into a fresh prefix, then configure and build
# examples/compile against it with find_package(llmopt), and check what llmopt_compile()
# produced. With EMIT cpp: the generated project's files when llmopt has --emit=cpp, else
# a configure-time error with a clear message.
#
# cmake -DBUILD=<llmopt build> -DSRC=<llmopt source> -DWORK=<scratch dir> -DMODEL=<onnx>
#       -P example_project.cmake
foreach(v BUILD SRC WORK MODEL)
  if(NOT ${v})
    message(FATAL_ERROR "example_project.cmake: -D${v}= is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
set(prefix ${WORK}/prefix)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
endfunction()

run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD} --prefix ${prefix})
foreach(f bin/llmopt lib/cmake/llmopt/llmoptConfig.cmake lib/cmake/llmopt/LlmoptCompile.cmake)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "cmake --install did not install ${f}")
  endif()
endforeach()
# The installed llmopt runs from the prefix alone (its libraries through the rpath).
run("installed llmopt --version" ${prefix}/bin/llmopt --version)

run("configure examples/compile" ${CMAKE_COMMAND} -S ${SRC}/examples/compile -B ${WORK}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DEXAMPLE_MODEL=${MODEL})
run("build examples/compile" ${CMAKE_COMMAND} --build ${WORK}/build)
foreach(f model.q4.onnx model.q4.json)
  if(NOT EXISTS ${WORK}/build/${f})
    message(FATAL_ERROR "llmopt_compile() did not produce ${f}")
  endif()
endforeach()
file(READ ${WORK}/build/model.q4.json report)
if(NOT report MATCHES "\"int4 sym block 32\"")
  message(FATAL_ERROR "model.q4.json has no int4 layers:\n${report}")
endif()
file(SIZE ${MODEL} in_size)
file(SIZE ${WORK}/build/model.q4.onnx out_size)
message(STATUS "example project: ${MODEL} (${in_size} bytes) -> model.q4.onnx (${out_size} bytes)")

# A second build is a no-op: nothing changed.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build OUTPUT_VARIABLE again)
if(again MATCHES "llmopt: ")
  message(FATAL_ERROR "an up-to-date build reran llmopt:\n${again}")
endif()

# EMIT cpp without --emit=cpp in the CLI: a configure-time error that says why.
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC}/examples/compile -B ${WORK}/build-cpp
                -DCMAKE_PREFIX_PATH=${prefix} -DEXAMPLE_MODEL=${MODEL} -DEXAMPLE_EMIT_CPP=ON
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
execute_process(COMMAND ${prefix}/bin/llmopt --help OUTPUT_VARIABLE help)
if(NOT help MATCHES "--emit")
  if(rc EQUAL 0 OR NOT err MATCHES "EMIT cpp needs an llmopt with --emit=cpp")
    message(FATAL_ERROR "EMIT cpp should fail at configure time with a clear message:\n${err}")
  endif()
else()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configure examples/compile with EMIT cpp failed (${rc}):\n${out}\n${err}")
  endif()
  run("build examples/compile with EMIT cpp" ${CMAKE_COMMAND} --build ${WORK}/build-cpp)
  foreach(f model.h model.cpp weights.bin CMakeLists.txt)
    if(NOT EXISTS ${WORK}/build-cpp/model_cpp/${f})
      message(FATAL_ERROR "llmopt_compile(... EMIT cpp) did not produce model_cpp/${f}")
    endif()
  endforeach()
  file(SIZE ${WORK}/build-cpp/model_cpp/weights.bin wsize)
  message(STATUS "example project: EMIT cpp -> model_cpp/ (weights.bin ${wsize} bytes)")
endif()
file(REMOVE_RECURSE ${WORK})
